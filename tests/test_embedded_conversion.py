"""The embedded teacher's conversion gives the same files under the lowest and the highest
transformers that glan-local supports (pyproject's range), with <|im_end|> as the EOS everywhere.

Under transformers 5.17 the earlier conversion wrote EOS <|im_start|> and a SentencePiece-style
tokenizer; vLLM's outlines backend then forced the wrong token after every JSON reply on CUDA.
The lowest version is installed into a folder of its own and put first on PYTHONPATH (its weight
loader needs an older huggingface-hub, installed beside it when the venv's does not fit)."""
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from glan_local import embedded
from glan_local.config import CannotProduce
from glan_local.turn_end import check_turn_end, turn_end

FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", "model.safetensors")


def _requirement(dist: str, name: str) -> Requirement:
    return next(r for r in map(Requirement, metadata.requires(dist) or []) if r.name == name and not r.marker)


def _lowest_supported() -> str:
    spec = _requirement("glan-local", "transformers").specifier
    lows = [s.version for s in spec if s.operator == ">="]
    assert lows, f"pyproject states no lower bound for transformers ({spec})"
    return lows[0]


def _install_transformers(version: str, cache: Path) -> Path:
    """transformers==version in a folder of its own, with the huggingface-hub it asks for."""
    target = cache / f"transformers-{version}"
    if (target / ".done").exists():
        return target
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    subprocess.run([*pip, f"transformers=={version}"], check=True)
    dist = next(target.glob("transformers-*.dist-info"))
    hub = next(Requirement(line.split(":", 1)[1].strip()) for line in (dist / "METADATA").read_text().splitlines()
               if line.startswith("Requires-Dist: huggingface-hub"))
    if not hub.specifier.contains(metadata.version("huggingface-hub"), prereleases=True):
        subprocess.run([*pip, str(hub).split(";")[0]], check=True)
    (target / ".done").write_text(version)
    return target


def _convert(gguf: Path, out: Path, pythonpath: str = "") -> str:
    code = ("import sys, transformers; from pathlib import Path; from glan_local.embedded import convert; "
            "convert(Path(sys.argv[1]), Path(sys.argv[2])); print(transformers.__version__)")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(Path.home()),
           **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    p = subprocess.run([sys.executable, "-c", code, str(gguf), str(out)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.split()[-1]


def test_conversion_is_identical_on_the_lowest_and_highest_supported_transformers(tmp_path_factory):
    cache = embedded.cache_root() / "test-deps"
    gguf = embedded.fetch_gguf()
    lowest = _lowest_supported()
    highest = metadata.version("transformers")
    assert _requirement("glan-local", "transformers").specifier.contains(highest)
    assert Version(highest) > Version(lowest), "the venv should hold the newest supported transformers"
    out = tmp_path_factory.mktemp("conversion")
    ran = {"low": _convert(gguf, out / "low", str(_install_transformers(lowest, cache))),
           "high": _convert(gguf, out / "high")}
    assert ran == {"low": lowest, "high": highest}
    for name in FILES:
        assert (out / "low" / name).read_bytes() == (out / "high" / name).read_bytes(), name
    for side in ("low", "high"):
        tc = json.loads((out / side / "tokenizer_config.json").read_text())
        assert tc["eos_token"] == tc["pad_token"] == "<|im_end|>"
        t = turn_end(out / side)
        assert t["turn_end"] == t["tokenizer_eos"] == "<|im_end|>"
        assert {t["turn_end_id"], t["tokenizer_eos_id"], t["pad_id"], *t["config_eos_ids"],
                *t["generation_eos_ids"]} == {2}


def test_a_folder_whose_eos_disagrees_with_the_chat_template_is_refused(tmp_path):
    """What transformers 5.17 wrote: tokenizer EOS <|im_start|> (id 1) while turns end with <|im_end|>."""
    folder = embedded.embedded_model_dir()
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in FILES[:-1]:
        (bad / name).write_bytes((folder / name).read_bytes())
    tc = json.loads((bad / "tokenizer_config.json").read_text())
    (bad / "tokenizer_config.json").write_text(json.dumps({**tc, "eos_token": "<|im_start|>"}))
    assert check_turn_end(folder, strict=True) == ""
    with pytest.raises(CannotProduce) as e:
        check_turn_end(bad, strict=True)
    msg = str(e.value)
    assert "\n" not in msg and "<|im_end|> (id 2)" in msg and "<|im_start|> (id 1)" in msg and "Fix:" in msg

#!/usr/bin/env python
"""Fingerprints of a run with the tests' FAKE engine (no model): the sha256 of every output a run
determines, for checking that a refactor changes no byte. Run it on two checkouts and diff:

    PYTHONPATH=<checkout> .venv/bin/python scripts/fake_fingerprints.py <checkout> /tmp/out [overrides ...]
"""
import hashlib
import shutil
import sys
from pathlib import Path

root, out, overrides = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3:]
sys.path.insert(0, str(root / "tests"))

from fakes import FakeEngine  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from glan_local import cli  # noqa: E402
from glan_local.config import GlanConfig, register  # noqa: E402
from glan_local.run import generate  # noqa: E402

register()
cli.register_resolvers()
model = out.parent / f"{out.name}-model"     # a folder that passes the model checks; nothing loads it
model.mkdir(parents=True, exist_ok=True)
(model / "config.json").write_text("{}")
(model / "model.safetensors").write_bytes(b"0")
(model / "chat_template.jinja").write_text("{{ messages }}")
with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
    composed = compose(config_name="config", overrides=[f"model.path={model}", "model.name=fake", *overrides])
cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), composed))
shutil.rmtree(out, ignore_errors=True)
generate(cfg, out, engine_factory=lambda p: FakeEngine())
files = [*out.glob("data/*"), *out.glob("levels/*.jsonl"), out / "taxonomy.yaml", *out.glob("publish/data/*"),
         out / "publish" / "quality" / "removed.jsonl"]
lines = [f"{hashlib.sha256(f.read_bytes()).hexdigest()[:16]} {f.relative_to(out)}" for f in sorted(files) if f.exists()]
print("\n".join(lines))
print(f"all: {hashlib.sha256(chr(10).join(lines).encode()).hexdigest()[:16]}")

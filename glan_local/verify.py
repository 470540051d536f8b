"""`glan-local-verify RUN_DIR`: replay a run from its manifest's config and its reply store,
without a model, and say whether the files in the run directory are exactly what they produce.

It needs nothing but the run directory: the manifest carries the taxonomy file and the user
templates the run read, so a copy of the directory verifies on any machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import manifest, teachers
from .config import from_container
from .engine import Completion, Request
from .prompts import Templates
from .run import walk
from .scheduler import Scheduler
from .store import Replies, Store


class StoreOnlyEngine:
    """An engine that never generates: verification must find every reply in the store."""

    version = ""
    notes: list[str] = []

    def __init__(self):
        self.missing: list[str] = []
        self.missing_total = 0

    def submit(self, req: Request) -> None:
        self.missing.append(req.key)

    def abort(self, keys: list[str]) -> None:
        self.missing = [k for k in self.missing if k not in set(keys)]

    def step(self) -> list[Completion]:
        done = [Completion(k, "", "error", 0, 0, 0, 0.0, error="not in store") for k in self.missing]
        self.missing_total += len(done)
        self.missing = []
        return done

    def close(self) -> None:
        pass


def replay(cfg: Any, out_dir: Path, store_path: Path, used: list, rounds: list) -> Scheduler:
    """Rebuild a run's outputs into out_dir from its reply store alone."""
    replies = Replies(Store(store_path))
    try:
        sched, _ = walk(cfg, out_dir, used, replies, Templates(cfg.prompts, cfg.language), rounds=rounds)
    finally:
        replies.close()
    return sched


def verify(run_dir: Path) -> tuple[bool, list[str]]:
    """Replay the run into a scratch directory and compare every output file."""
    man = manifest.read(run_dir)
    if man is None:
        return False, [f"no manifest.json in {run_dir}: not a finished glan-local run"]
    engine = StoreOnlyEngine()
    lines = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as copies:
        # Checked as loaded, except for files the quality step reads: verify never runs it.
        cfg = manifest.with_inputs(from_container(man["config"], files=False), man, Path(copies))
        replay(cfg, Path(tmp), run_dir / "store.sqlite", teachers.of_manifest(cfg, man, engine),
               man.get("regenerated", []))
        missing = engine.missing_total
        if missing:
            lines.append(f"{missing} requests of this config are not in the store: the templates, "
                         "schemas or config differ from what produced it")
        ours, on_disk, recorded = manifest.fingerprints(Path(tmp)), manifest.fingerprints(run_dir), man["fingerprints"]
    ok = not missing
    for name in sorted(set(ours) | set(recorded)):
        same = ours.get(name) == recorded.get(name) == on_disk.get(name)
        ok &= same
        state = "identical" if same else (
            "differs from the replay" if on_disk.get(name) != ours.get(name) else "differs from the manifest")
        lines.append(f"{name}: {state}")
    return ok, lines


def main() -> None:
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

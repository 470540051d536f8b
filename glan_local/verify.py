"""`glan-local-verify RUN_DIR`: replay a run from its manifest's config and its reply store,
without a model, and say whether the files in the run directory are exactly what they produce.

It only reads. The store is opened immutable (store.read_only), the replay is written to a
temporary directory elsewhere, no lock file is made, nothing is logged into the run directory:
its bytes are the same before and after, intact or damaged. A run still being written (its lock
held) is not verified. Exit codes: 0 identical; 1 something differs (each difference named:
missing replies counted, edited rows by file and id); 2 the input cannot be read (a missing
directory, a garbage manifest or store), or a writer holds the run.

It needs nothing but the run directory: the manifest carries the taxonomy file and the user
templates the run read, so a copy of the directory verifies on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import identity, levels, manifest, rundir, teachers
from .config import ConfigError, from_container
from .engine import Completion, Request
from .export import record_key
from .prompts import Templates
from .scheduler import Scheduler
from .store import NotAStore, Replies, read_only

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig

EXAMPLES = 3        # differing rows named per file


class Unreadable(Exception):
    """What verify cannot read, or may not read now: one line naming it. Exit code 2."""


class StoreOnlyEngine:
    """An engine that never generates: verification must find every reply in the store."""

    version = ""
    notes: list[str] = []

    def __init__(self):
        self.missing: list[Request] = []
        self.missing_by_level: Counter = Counter()
        self.examples: list[str] = []

    def submit(self, req: Request) -> None:
        self.missing.append(req)

    def abort(self, keys: list[str]) -> None:
        gone = set(keys)
        self.missing = [r for r in self.missing if r.key not in gone]

    def step(self) -> list[Completion]:
        for r in self.missing:
            self.missing_by_level[r.level] += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(f"{r.level} {r.key}")
        done = [Completion(r.key, "", "error", 0, 0, 0, 0.0, error="not in store") for r in self.missing]
        self.missing = []
        return done

    def close(self) -> None:
        pass


def replay(cfg: GlanConfig, out_dir: Path, replies: Replies, used: list, rounds: list) -> Scheduler:
    """Rebuild a run's outputs into out_dir from its reply store alone."""
    from .run import walk

    sched, _ = walk(cfg, out_dir, used, replies, Templates(cfg.prompts, cfg.language), rounds=rounds, replay=True)
    return sched


def _manifest(run_dir: Path) -> dict:
    try:
        man = manifest.read(run_dir)
    except manifest.Unreadable as e:
        raise Unreadable(str(e)) from None
    if man is None:
        raise Unreadable(f"{run_dir / 'manifest.json'} is missing: not a finished glan-local run")
    missing = [k for k in ("config", "identity", "identity_sha256", "fingerprints", "model_id", "engine_id")
               if k not in man]
    if missing:
        raise Unreadable(f"{run_dir / 'manifest.json'} lacks {', '.join(missing)}: not a manifest glan-local wrote")
    return man


def _identity_lines(cfg: GlanConfig, man: dict, templates: Templates) -> list[str]:
    """The manifest's recorded identity against the one its own config and inputs give."""
    try:
        recorded = identity.Identity.from_dict(man["identity"])
    except (ValueError, KeyError, TypeError) as e:
        return [f"manifest.json: its identity is not one glan-local wrote ({e})"]
    taxonomy = Path(cfg.taxonomy.file).read_bytes() if cfg.taxonomy.file else None
    teachers_in = {k: v for k, v in recorded.inputs.items() if k in ("model", "answers.model")}
    ours = identity.of_run(man["config"], teachers_in, templates.used(levels.enabled(cfg)), taxonomy,
                           man.get("regenerated", []))
    lines = []
    if recorded.digest != man["identity_sha256"]:
        lines.append("manifest.json: identity_sha256 is not the digest of its identity (edited)")
    for d in recorded.differences(ours):
        lines.append(f"manifest.json: its identity and its own config or inputs disagree: {d}")
    return lines


def verify(run_dir: Path) -> tuple[bool, list[str]]:
    """Replay the run into a scratch directory elsewhere and compare every output file.
    Raises Unreadable for what cannot be verified."""
    if not run_dir.is_dir():
        raise Unreadable(f"{run_dir}: " + ("not a directory" if run_dir.exists() else "no such directory"))
    try:
        with rundir.reading(run_dir):
            return _verify(run_dir)
    except rundir.Busy as e:
        raise Unreadable(f"{e}: verify it once that run has ended") from None


def _verify(run_dir: Path) -> tuple[bool, list[str]]:
    man = _manifest(run_dir)
    with tempfile.TemporaryDirectory(prefix="glan-verify-") as tmp:
        copies, out = Path(tmp) / "inputs", Path(tmp) / "replay"
        try:
            # Checked as loaded, except for files the quality step reads: verify never runs it.
            cfg = manifest.with_inputs(from_container(man["config"], files=False), man, copies)
            templates = Templates(cfg.prompts, cfg.language)
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise Unreadable(f"{run_dir / 'manifest.json'}: its config cannot be used ({e})") from None
        lines = _identity_lines(cfg, man, templates)
        engine = StoreOnlyEngine()
        try:
            with read_only(run_dir / "store.sqlite") as store:
                used = teachers.of_manifest(cfg, man, engine)
                replay(cfg, out, Replies(store, readonly=True), used, man.get("regenerated", []))
        except NotAStore as e:
            raise Unreadable(str(e)) from None
        lines += _missing_lines(engine)
        lines += _file_lines(run_dir, out, man)
    return not lines, lines


def _missing_lines(engine: StoreOnlyEngine) -> list[str]:
    n = sum(engine.missing_by_level.values())
    if not n:
        return []
    by = ", ".join(f"{lv} {c}" for lv, c in engine.missing_by_level.most_common())
    what = "1 reply the run used is" if n == 1 else f"{n} replies the run used are"
    return [f"store.sqlite: {what} missing ({by}; e.g. "
            f"{'; '.join(engine.examples)}): the store is damaged or incomplete, or the config and templates "
            "are not what produced it"]


def _file_lines(run_dir: Path, replayed: Path, man: dict) -> list[str]:
    ours, on_disk, recorded = manifest.fingerprints(replayed), manifest.fingerprints(run_dir), man["fingerprints"]
    lines = []
    for name in sorted(set(ours) | set(recorded) | set(on_disk)):
        o, d, r = ours.get(name), on_disk.get(name), recorded.get(name)
        if o == d == r:
            continue
        if d is None:
            lines.append(f"{name}: missing from the run directory")
        elif o is None:
            lines.append(f"{name}: not produced by the replay")
        elif o != d:
            lines.append(f"{name}: differs from the replay" + _rows_differ(run_dir / name, replayed / name))
        else:
            lines.append(f"{name}: the same as the replay, but not as the manifest recorded it (manifest edited?)")
    for name, sha in sorted((man.get("published") or {}).get("files", {}).items()):
        p = run_dir / name
        if not p.is_file():
            lines.append(f"{name}: missing (the quality step wrote it)")
        elif manifest.sha256_file(p) != sha:
            lines.append(f"{name}: edited since the quality step wrote it")
    return lines


def _rows(path: Path) -> Iterator[tuple[tuple, Optional[dict]]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            if line.strip():
                try:
                    r = json.loads(line)
                    yield (str(record_key(r)[0]), record_key(r)[1]), r
                except (ValueError, AttributeError):
                    yield ("~unparseable line", n), None


def _rows_n(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _rows_differ(disk: Path, replayed: Path) -> str:
    """For JSONL: how many rows differ, are missing or extra, with a few ids and the fields
    (and for a field generated by the teacher, the store entry it came from). Both files are
    in tree order: they are compared as two sorted streams, in constant memory."""
    if disk.suffix != ".jsonl":
        return ""
    found: dict[str, list] = {"edited": [], "missing": [], "extra": []}
    counts: Counter = Counter()
    ia, ib = _rows(disk), _rows(replayed)
    a, b = next(ia, None), next(ib, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            kind, key, a = "extra", a[0], next(ia, None)
        elif a is None or b[0] < a[0]:
            kind, key, b = "missing", b[0], next(ib, None)
        else:
            same, da, db = a[1] == b[1], a[1] or {}, b[1] or {}
            key, a, b = a[0], next(ia, None), next(ib, None)
            if same:
                continue
            kind = "edited"
            fields = sorted(f for f in set(da) | set(db) if da.get(f) != db.get(f))
            entries = sorted({str(db[f"{f}_request"]) for f in fields if db.get(f"{f}_request")})
            key = (f"{key[0]} ({', '.join(fields[:4])}" + (f"; store entry {', '.join(entries)}" if entries else "")
                   + ")", key[1])
        counts[kind] += 1
        if len(found[kind]) < EXAMPLES:
            found[kind].append(str(key[0]))
    words = {"edited": "edited", "missing": "only in the replay", "extra": "only in the run directory"}
    parts = [f"{_rows_n(counts[k])} {w} (e.g. {'; '.join(found[k])})" for k, w in words.items() if counts[k]]
    return f": {'; '.join(parts)}" if parts else ": the same rows, other bytes"


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="glan-local-verify",
                                 description="Check a run directory against its manifest and reply store. "
                                             "It only reads. Exit 0: identical; 1: differs; 2: cannot be read.")
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    from .progress import quiet

    quiet(False)
    try:
        ok, lines = verify(args.run_dir)
    except Unreadable as e:
        print(f"[glan-local-verify] cannot verify: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("[glan-local-verify] stopped by SIGINT (nothing was written)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:      # anything else unreadable in a damaged directory: still one line
        if os.environ.get("GLAN_DEBUG") == "1":
            raise
        print(f"[glan-local-verify] cannot verify {args.run_dir}: {type(e).__name__}: "
              f"{' '.join(str(e).split())[:200]} (GLAN_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(2)
    for line in lines:
        print(f"  {line}")
    print(f"OK: {args.run_dir} is exactly what its config and store produce" if ok else
          f"MISMATCH: {args.run_dir} is not what its config and store produce ({len(lines)} differences above)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Level files and the dataset (parquet + JSONL, via `datasets`).

While the run goes, records stream to <run>/levels/<level>.jsonl.part in completion order;
export sorts them into tree order, so the files do not depend on scheduling, and replaces the
final files atomically (a crash never leaves a half-written file that looks complete).
"""
from __future__ import annotations

import heapq
import json
import os
import shutil
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from . import levels
from .atomic import atomic_path


def _failpoint(name: str) -> None:
    """Test hook: GLAN_FAILPOINT=<name> kills the process here with SIGKILL, as a crash would."""
    if os.environ.get("GLAN_FAILPOINT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_encode = json.JSONEncoder(ensure_ascii=False).encode     # one encoder for every record


class Sinks:
    """Append-only JSONL parts, one per level, plus failures."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "levels"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Any] = {}

    def _file(self, name: str):
        if name not in self.files:
            # Open for the whole walk, closed by close(): a level writes to it whenever a node finishes.
            self.files[name] = open(self.dir / f"{name}.jsonl.part", "w", encoding="utf-8")  # noqa: SIM115
        return self.files[name]

    def write(self, level: str, records: list[dict]) -> None:
        f = self._file(level)
        # No flush: the parts are rebuilt from the store by a resumed run, never read after a crash.
        f.write("".join(_encode(r) + "\n" for r in records))

    def failure(self, record: dict) -> None:
        self.write("failures", [record])

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def record_key(r: dict) -> tuple:
    """Tree order of a level record (or of a failure: its node, then its ask)."""
    return (r.get("id") or r.get("node", ""), r.get("ask", 0))


CHUNK = 50_000   # records sorted in memory at once; larger levels are merged from sorted runs


def _sorted_lines(part: Path, tmp_dir: Path) -> Iterator[str]:
    """The part's lines in tree order, by an external merge sort: memory stays bounded by
    CHUNK records however many rows a level has."""
    if not part.exists():
        return
    runs: list[Path] = []
    with open(part, encoding="utf-8") as f:
        while True:
            chunk = [(record_key(json.loads(line)), line) for line in islice(f, CHUNK) if line.strip()]
            if not chunk:
                break
            chunk.sort(key=lambda kv: kv[0])
            run = tmp_dir / f"{part.name}.run{len(runs)}"
            run.write_text("".join(line if line.endswith("\n") else line + "\n" for _, line in chunk),
                           encoding="utf-8")
            runs.append(run)
    files = [open(r, encoding="utf-8") for r in runs]     # noqa: SIM115 (closed in the finally below)
    try:
        keyed = [((record_key(json.loads(line)), line) for line in f) for f in files]
        for _, line in heapq.merge(*keyed, key=lambda kv: kv[0]):
            yield line
    finally:
        for f in files:
            f.close()
        for r in runs:
            r.unlink(missing_ok=True)


def finalize_levels(run_dir: Path, names: list[str]) -> dict[str, int]:
    """Sort each level's part into <level>.jsonl (and failures.jsonl); then each level writes
    what it derives from its file (levels.saved: the taxonomy's taxonomy.yaml)."""
    counts = {}
    for name in names + ["failures"]:
        part = run_dir / "levels" / f"{name}.jsonl.part"
        n = 0
        with atomic_path(run_dir / "levels" / f"{name}.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
            for line in _sorted_lines(part, run_dir / "levels"):
                out.write(line)
                n += 1
        part.unlink(missing_ok=True)
        counts[name] = n
        levels.saved(name, run_dir)
    return counts


def export_dataset(run_dir: Path, level: str = "answers") -> int:
    """The last enabled level (answers, or judge: rows plus scores) as a `datasets` dataset:
    data/train.jsonl and a parquet shard."""
    from datasets import Dataset

    src = run_dir / "levels" / f"{level}.jsonl"
    out = run_dir / "data"
    out.mkdir(exist_ok=True)
    rows = 0
    if src.exists():
        with open(src, encoding="utf-8") as f:
            rows = sum(1 for _ in f)
    if rows == 0:
        return 0
    cache = run_dir / ".cache"
    ds = Dataset.from_json(str(src), cache_dir=str(cache))
    for name, writer in (("train-00000-of-00001.parquet", ds.to_parquet),
                         ("train.jsonl", lambda p, ds=ds: ds.to_json(p, lines=True, force_ascii=False))):
        with atomic_path(out / name) as tmp:     # a full disk: the previous file stays as it was
            writer(str(tmp))
            _failpoint("export")
    del ds
    shutil.rmtree(cache, ignore_errors=True)
    return rows

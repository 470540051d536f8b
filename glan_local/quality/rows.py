"""Reading rows from wherever a user keeps them: a run directory, JSONL/JSON, parquet, a folder
of those, a `datasets` save_to_disk folder, or `hub:<name>[:<config>]` (only with hub access;
nothing here downloads otherwise)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Optional

# Columns that hold the prompt in common benchmark and instruction formats, in preference order.
TEXT_FIELDS = ("question", "prompt", "problem", "input", "text", "instruction")


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and (p / "levels").is_dir()


BATCH = 1000    # rows decoded at once from parquet and `datasets` folders


def _read_file(f: Path) -> Iterator[dict]:
    name = f.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH):
            yield from batch.to_pylist()
        return
    with open(f, encoding="utf-8") as fh:
        first = fh.read(4096)
        fh.seek(0)
        if name.endswith(".json") and first.lstrip().startswith("["):
            yield from json.load(fh)        # a JSON array has to be read whole
            return
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _from_datasets(obj) -> Iterator[dict]:
    # A DatasetDict: every split, since a benchmark's train and test both count as seen.
    for split in (obj.values() if hasattr(obj, "values") and not hasattr(obj, "to_list") else [obj]):
        for batch in split.iter(batch_size=BATCH):
            keys = list(batch)
            yield from (dict(zip(keys, vals)) for vals in zip(*(batch[k] for k in keys)))


def load_rows(source: str | Path) -> list[dict]:
    return list(iter_rows(source))


def chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def iter_rows(source: str | Path) -> Iterator[dict]:
    """The rows of a source, one at a time (a whole file is held only for a JSON array)."""
    s = str(source)
    if s.startswith("hub:"):
        from datasets import load_dataset

        name, _, config = s[4:].partition(":")
        yield from _from_datasets(load_dataset(name, config or None))
        return
    p = Path(s).expanduser()
    if p.is_file():
        yield from _read_file(p)
        return
    if not p.is_dir():
        raise FileNotFoundError(f"'{p}' does not exist")
    if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        from datasets import load_from_disk

        yield from _from_datasets(load_from_disk(str(p)))
        return
    if (p / "data").is_dir():          # a run directory or a published folder
        p = p / "data"
    # Parquet first: a folder holding both formats holds the same rows twice.
    files = sorted(p.rglob("*.parquet")) or sorted([*p.rglob("*.jsonl"), *p.rglob("*.json")])
    files = [f for f in files if not f.name.startswith(".") and f.name not in ("dataset_info.json", "state.json")]
    if not files:
        raise FileNotFoundError(f"no JSONL, JSON or parquet files in '{p}'")
    for f in files:
        yield from _read_file(f)


def detect_fields(rows: list[dict], wanted: Optional[list[str]] = None) -> list[str]:
    """The named columns, or every common prompt-like column present."""
    present = {k for r in rows[:100] for k in r}
    if wanted:
        missing = [f for f in wanted if f not in present]
        if missing:
            raise ValueError(f"column(s) {missing} not found; columns are {sorted(present)}")
        return list(wanted)
    found = [f for f in TEXT_FIELDS if f in present]
    if not found:
        raise ValueError(f"no text column found among {list(TEXT_FIELDS)}; columns are {sorted(present)}; "
                         "name one with quality.decontam.benchmark_fields")
    return found

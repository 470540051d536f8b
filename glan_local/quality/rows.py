"""Reading rows from wherever a user keeps them: a run directory, JSONL/JSON, parquet, a folder
of those, a `datasets` save_to_disk folder, or `hub:<name>[:<config>]` (only with hub access;
nothing here downloads otherwise)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

# Columns that hold the prompt in common benchmark and instruction formats, in preference order.
TEXT_FIELDS = ("question", "prompt", "problem", "input", "text", "instruction")


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and (p / "levels").is_dir()


def _read_file(f: Path) -> list[dict]:
    name = f.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(f).to_pylist()
    text = f.read_text(encoding="utf-8")
    if name.endswith(".json") and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _from_datasets(obj) -> list[dict]:
    # A DatasetDict: every split, since a benchmark's train and test both count as seen.
    if hasattr(obj, "values") and not hasattr(obj, "to_list"):
        return [r for split in obj.values() for r in split.to_list()]
    return obj.to_list()


def load_rows(source: str | Path) -> list[dict]:
    s = str(source)
    if s.startswith("hub:"):
        from datasets import load_dataset

        name, _, config = s[4:].partition(":")
        return _from_datasets(load_dataset(name, config or None))
    p = Path(s).expanduser()
    if p.is_file():
        return _read_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"'{p}' does not exist")
    if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        from datasets import load_from_disk

        return _from_datasets(load_from_disk(str(p)))
    if (p / "data").is_dir():          # a run directory or a published folder
        p = p / "data"
    # Parquet first: a folder holding both formats holds the same rows twice.
    files = sorted(p.rglob("*.parquet")) or sorted([*p.rglob("*.jsonl"), *p.rglob("*.json")])
    files = [f for f in files if not f.name.startswith(".") and f.name not in ("dataset_info.json", "state.json")]
    if not files:
        raise FileNotFoundError(f"no JSONL, JSON or parquet files in '{p}'")
    return [r for f in files for r in _read_file(f)]


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

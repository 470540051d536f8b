"""The published dataset: a `datasets.DatasetDict` (train, and an optional held-out split of n
rows per discipline, as GLAN held out 50) written as parquet shards plus JSONL under data/, in
the layout the hub reads (the card's configs point at data/<split>-*). Uploading happens only
when a repo id is configured; otherwise nothing leaves the machine.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from pathlib import Path

from ..seeds import derive_seed


def heldout_split(rows: list[dict], per_discipline: int, seed: int) -> tuple[list[dict], list[dict]]:
    """n rows per discipline, drawn with a seed derived from the run seed; order kept in both."""
    if per_discipline <= 0:
        return rows, []
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by[str(r.get("discipline", ""))].append(i)
    chosen: set[int] = set()
    for disc in sorted(by):
        idx = by[disc]
        # A discipline with fewer rows than asked gives them all: the split stays per-discipline exact.
        chosen.update(random.Random(derive_seed(seed, "heldout", disc)).sample(idx, min(per_discipline, len(idx))))
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


def _columns(rows: list[dict]) -> dict[str, list]:
    # Every key of every row (user files may be ragged); missing cells are null.
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return {k: [r.get(k) for r in rows] for k in keys}


def to_dataset_dict(splits: dict[str, list[dict]]):
    from datasets import Dataset, DatasetDict

    return DatasetDict({name: Dataset.from_dict(_columns(rows)) for name, rows in splits.items() if rows})


def write(dd, splits: dict[str, list[dict]], out: Path, shard_rows: int) -> dict[str, list[str]]:
    """data/<split>-0000i-of-0000N.parquet and data/<split>.jsonl; returns the files per split."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    # A rerun with fewer shards or splits must not leave stale ones (only our own names go).
    for old in data.glob("*-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].parquet"):
        (data / (old.name.rsplit("-", 3)[0] + ".jsonl")).unlink(missing_ok=True)
        old.unlink()
    files: dict[str, list[str]] = {}
    import datasets

    # One bar per shard says nothing a person needs; restore whatever the caller had.
    was_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        _write_splits(dd, splits, data, shard_rows, files)
    finally:
        if not was_off:
            datasets.enable_progress_bars()
    return files


def _write_splits(dd, splits: dict[str, list[dict]], data: Path, shard_rows: int, files: dict) -> None:
    for name, ds in dd.items():
        shards = max(1, math.ceil(len(ds) / shard_rows))
        files[name] = []
        for i in range(shards):
            f = data / f"{name}-{i:05d}-of-{shards:05d}.parquet"
            ds.shard(num_shards=shards, index=i, contiguous=True).to_parquet(str(f) + ".tmp")
            os.replace(str(f) + ".tmp", f)
            files[name].append(f.name)
        with open(data / f"{name}.jsonl.tmp", "w", encoding="utf-8") as fh:
            for r in splits[name]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(data / f"{name}.jsonl.tmp", data / f"{name}.jsonl")
        files[name].append(f"{name}.jsonl")


def push(out: Path, repo_id: str, private: bool, say=None) -> str:
    """Upload the card and data/ exactly as written locally (the report and side files stay)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="dataset",
                      allow_patterns=["README.md", "data/*"], commit_message="Upload GLAN dataset (glan-local)")
    if say:
        say(f"pushed {out} to the hub dataset repo {repo_id}")
    return repo_id

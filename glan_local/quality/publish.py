"""The published dataset: train, and an optional held-out split of n rows per discipline (as
GLAN held out 50), written a row at a time as parquet shards in `datasets`' format plus JSONL
under data/, in the layout the hub reads (the card's configs point at data/<split>-*), so
`load_dataset(<folder>)` gives a DatasetDict. Uploading happens only when a repo id is
configured; otherwise nothing leaves the machine.
"""
from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..atomic import commit
from ..seeds import derive_seed


def heldout_positions(by_discipline: dict[str, list[int]], per_discipline: int, seed: int) -> set[int]:
    """by_discipline: the kept rows' positions per discipline, in order. n of each, drawn with a
    seed derived from the run seed; a discipline with fewer rows gives them all."""
    chosen: set[int] = set()
    if per_discipline <= 0:
        return chosen
    for disc in sorted(by_discipline):
        idx = by_discipline[disc]
        chosen.update(random.Random(derive_seed(seed, "heldout", disc)).sample(idx, min(per_discipline, len(idx))))
    return chosen


def heldout_split(rows: list[dict], per_discipline: int, seed: int) -> tuple[list[dict], list[dict]]:
    """n rows per discipline, drawn with a seed derived from the run seed; order kept in both."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by[str(r.get("discipline", ""))].append(i)
    chosen = heldout_positions(by, per_discipline, seed)
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


class Schema:
    """The Arrow schema of rows seen chunk by chunk: every key of every row (user files may be
    ragged; missing cells are null), types widened as later rows demand (null -> string)."""

    def __init__(self) -> None:
        self.schema: Any = None     # a pyarrow.Schema once rows are seen

    def add(self, rows: list[dict]) -> None:
        import pyarrow as pa

        if not rows:
            return
        keys: dict[str, None] = dict.fromkeys(self.schema.names) if self.schema is not None else {}
        for r in rows:
            keys.update(dict.fromkeys(r))
        s = pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys}).schema
        self.schema = s if self.schema is None else pa.unify_schemas([self.schema, s], promote_options="permissive")


class Writer:
    """data/<split>-0000i-of-0000N.parquet and data/<split>.jsonl, written a row at a time.

    A split's rows are cut into contiguous shards of sizes as `datasets`' shard(contiguous=True)
    makes them (so shard_rows=4 and 6 rows give 3 + 3), which needs each split's size up front.
    """
    # A parquet row group is flushed at this much JSON text: bounded memory, and groups well under
    # the 100 MB `datasets` aims for (rows are read a whole group at a time).
    GROUP_BYTES = 16 << 20

    def __init__(self, out: Path, sizes: dict[str, int], schema, shard_rows: int):
        import datasets

        self.data = out / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        # A rerun with fewer shards or splits must not leave stale ones (only our own names go).
        for old in self.data.glob("*-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].parquet"):
            (self.data / (old.name.rsplit("-", 3)[0] + ".jsonl")).unlink(missing_ok=True)
            old.unlink()
        # As datasets writes it: its features in the schema's metadata, so load_dataset restores them.
        self.schema: Any = datasets.Features.from_arrow_schema(schema).arrow_schema if schema is not None else None
        self.cdc = getattr(datasets.config, "DEFAULT_CDC_OPTIONS", None)
        self.splits: dict[str, dict[str, Any]] = {}
        for name, n in sizes.items():
            if n:
                k = max(1, math.ceil(n / shard_rows))
                div, mod = divmod(n, k)
                self.splits[name] = {"sizes": [div + (i < mod) for i in range(k)], "shard": -1, "left": 0,
                                     "pq": None, "buf": [], "bytes": 0, "files": [],
                                     "jsonl": open(self.data / f"{name}.jsonl.tmp", "w", encoding="utf-8")}  # noqa: SIM115

    def _flush(self, s: dict) -> None:
        import pyarrow as pa

        if s["buf"]:
            s["pq"].write_table(pa.Table.from_pydict({k: [r.get(k) for r in s["buf"]] for k in self.schema.names},
                                                     schema=self.schema))
            s["buf"], s["bytes"] = [], 0

    def _next_shard(self, name: str, s: dict) -> None:
        import pyarrow.parquet as pq

        self._close_shard(s)
        s["shard"] += 1
        k = len(s["sizes"])
        f = self.data / f"{name}-{s['shard']:05d}-of-{k:05d}.parquet"
        kw = {"use_content_defined_chunking": self.cdc, "write_page_index": True} if self.cdc else {}
        s["pq"], s["path"], s["left"] = pq.ParquetWriter(str(f) + ".tmp", self.schema, **kw), f, s["sizes"][s["shard"]]
        s["files"].append(f.name)

    def _close_shard(self, s: dict) -> None:
        if s["pq"] is not None:
            self._flush(s)
            if self.cdc:
                s["pq"].add_key_value_metadata({"content_defined_chunking": json.dumps(self.cdc)})
            s["pq"].close()
            commit(str(s["path"]) + ".tmp", s["path"])
            s["pq"] = None

    def write(self, name: str, row: dict) -> None:
        s = self.splits[name]
        if s["left"] == 0:
            self._next_shard(name, s)
        line = json.dumps(row, ensure_ascii=False) + "\n"
        s["jsonl"].write(line)
        s["buf"].append(row)
        s["bytes"] += len(line)
        s["left"] -= 1
        if s["bytes"] >= self.GROUP_BYTES:
            self._flush(s)

    def close(self) -> dict[str, list[str]]:
        """The files per split."""
        files = {}
        for name, s in self.splits.items():
            self._close_shard(s)
            s["jsonl"].close()
            commit(self.data / f"{name}.jsonl.tmp", self.data / f"{name}.jsonl")
            files[name] = s["files"] + [f"{name}.jsonl"]
        return files


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

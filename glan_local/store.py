"""Request keys and the durable reply store.

A reply is committed to SQLite (WAL, synchronous=FULL: fsync'd) before it counts as done, so a
killed run loses at most what was in flight. Replies are looked up by key, never by position.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_key(model_id: str, engine_id: dict, messages: list, schema: Optional[dict], sampling: dict) -> str:
    """Everything that determines a reply, hashed: model, output-affecting engine settings,
    rendered messages, schema and sampling (seed included)."""
    blob = canonical({"model": model_id, "engine": engine_id, "messages": messages,
                      "schema": schema, "sampling": sampling})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class StoredReply:
    key: str
    level: str
    node: str
    attempt: int
    seed: int
    status: str          # "ok" or "failed"
    reason: str          # why a failed attempt failed; "" when ok
    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    elapsed_s: float
    messages: str        # the rendered conversation, JSON: what was really asked
    request: str = "{}"  # schema and sampling (seed included), JSON: how it was asked


_COLUMNS = list(StoredReply.__dataclass_fields__)


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # A shared cache may be written by several sweep jobs at once: wait for the lock.
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=120)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS replies (" + ", ".join(
                f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in _COLUMNS)
            + ", created REAL)")

    def get(self, key: str) -> Optional[StoredReply]:
        row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM replies WHERE key=?", (key,)).fetchone()
        return StoredReply(*row) if row else None

    def put(self, reply: StoredReply) -> None:
        values = asdict(reply)
        self.db.execute(
            f"INSERT OR REPLACE INTO replies ({', '.join(_COLUMNS)}, created) VALUES "
            f"({', '.join('?' * len(_COLUMNS))}, ?)", [values[c] for c in _COLUMNS] + [time.time()])

    def __iter__(self) -> Iterator[StoredReply]:
        for row in self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM replies ORDER BY key"):
            yield StoredReply(*row)

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class Replies:
    """The run's own store, backed by an optional shared cache across runs.

    A reply found only in the cache is copied into the run's store, so a run directory always
    holds every reply its dataset came from (what `glan-local-verify` replays).
    """

    def __init__(self, run_store: Store, cache: Optional[Store] = None):
        self.run, self.cache = run_store, cache

    def get(self, key: str) -> tuple[Optional[StoredReply], str]:
        hit = self.run.get(key)
        if hit is not None:
            return hit, "run"
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.run.put(hit)
                return hit, "cache"
        return None, ""

    def put(self, reply: StoredReply) -> None:
        self.run.put(reply)
        if self.cache is not None:
            self.cache.put(reply)

    def close(self) -> None:
        self.run.close()
        if self.cache is not None:
            self.cache.close()

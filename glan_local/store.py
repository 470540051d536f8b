"""Request keys and the durable reply store.

Replies are committed to SQLite in one transaction per engine step (group commit, fsync'd with
synchronous=FULL): a reply counts as done once its step's transaction is committed, so a killed
run loses at most what was in flight plus the replies of the step being stored. Replies are
looked up by key, never by position.

Prompts are stored as blocks (a message's paragraphs, content-addressed), each block once per
store: every question prompt of a syllabus repeats that syllabus, which would otherwise be
written once per question (about 520 times per syllabus at the paper's breadth).

Shared storage. SQLite's WAL keeps its index in shared memory, which a network file system
(NFS, Lustre, GPFS, CIFS ...) does not share between nodes. A store there uses a rollback
journal instead (journal_mode=DELETE: nothing but the file and POSIX locks), and a cache_dir
there is written one file per writer (CacheDir): no two processes ever write one file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

# Encoders built once: json.dumps with options builds a new encoder per call, on the hot path.
_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
_compact = json.JSONEncoder(separators=(",", ":")).encode


def canonical(obj: Any) -> str:
    return _canonical(obj)


@cache
def schema_json(schema_cls) -> tuple[dict, str]:
    """A reply schema class's JSON schema and its sha256, computed once per class."""
    schema = schema_cls.model_json_schema()
    return schema, hashlib.sha256(canonical(schema).encode()).hexdigest()


def teacher_identity(model_id: str, engine_id: dict) -> bytes:
    """The teacher's part of every request key: the model and its output-affecting engine settings."""
    return canonical({"model": model_id, "engine": engine_id}).encode()


def asked(schema_sha: Optional[str], sampling: dict) -> str:
    """How a request is asked, as stored with its reply: the schema (by its hash) and sampling."""
    return canonical({"schema": schema_sha, "sampling": sampling})


def request_key(teacher: bytes, how: str, messages: list) -> str:
    """Everything that determines a reply, hashed: the teacher (teacher_identity), how it is
    asked (asked: schema and sampling, seed included) and the rendered messages."""
    h = hashlib.sha256(teacher + b"\x00" + how.encode())
    for m in messages:      # fed as they are, not through JSON: prompts are most of the bytes
        h.update(b"\x00" + m["role"].encode() + b"\x00" + m["content"].encode())
    return h.hexdigest()[:32]


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
    request: str = "{}"  # the schema's sha256 (see `schemas`) and sampling (seed included), JSON: how it was asked
    vllm: str = ""       # the vLLM version that generated it ("" for replies stored before it was recorded)


_COLUMNS = list(StoredReply.__dataclass_fields__)
# `prompt`: the rendered conversation as [[role, [block ids]], ...] (what was really asked);
# `messages`: the same as plain JSON, written by glan-local before blocks (read, never written).
_TABLE_COLUMNS = _COLUMNS + ["prompt", "messages", "created"]
TABLES = {"replies": _TABLE_COLUMNS, "blocks": ["id", "text"], "schemas": ["sha256", "json"]}
_BLOCK_CACHE = 1 << 16     # block ids known to be stored: skips re-inserting a syllabus per question


def _block_id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


NETWORK_FS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "glusterfs", "fuse.glusterfs", "ceph",
    "fuse.ceph", "fuse.cephfs", "fuse.sshfs", "9p", "afs", "panfs", "wekafs", "orangefs", "pvfs2", "ocfs2",
    "gfs2", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse", "fuse.weka"})


def filesystem(path: Path) -> tuple[str, frozenset]:
    """(type, mount options) of the file system that holds path (or would: its nearest existing
    parent), from /proc/self/mountinfo; ("unknown", {}) where that cannot be read."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    p = p.resolve()
    best: tuple = ("", "unknown", frozenset())
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 6 or len(tail) < 3:
                    continue
                point = fields[4].encode().decode("unicode_escape")
                if (str(p) == point or str(p).startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                    best = (point, tail[0], frozenset(fields[5].split(",") + tail[2].split(",")))
    except OSError:
        pass
    return best[1], best[2]


def check_locking(path: Path, key: str) -> bool:
    """Whether path is on a network file system (then stores use a rollback journal); refuses,
    with ConfigError, one whose file locks are known not to hold across nodes."""
    from .errors import ConfigError

    kind, options = filesystem(path)
    if kind == "lustre" and "flock" not in options:
        how = "-o localflock (locks hold on one node only)" if "localflock" in options else "without -o flock"
        raise ConfigError(key, f"'{path}' is on Lustre mounted {how}: jobs on two nodes could write one store",
                          f"ask for the file system to be mounted with -o flock, or point {key} at a local disk "
                          "and copy the run to shared storage when it ends")
    return kind in NETWORK_FS


class Store:
    def __init__(self, path: Path, network: Optional[bool] = None, readonly: bool = False,
                 immutable: bool = False):
        """network: None finds out (filesystem); readonly: another writer's file of a CacheDir;
        immutable: nothing at all is written beside the file (no -shm, no -wal: see read_only)."""
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.network = filesystem(path)[0] in NETWORK_FS if network is None else network
        self.readonly = readonly
        # A shared cache may be written by several sweep jobs at once: wait for the lock.
        target = f"file:{quote(str(path))}?mode=ro{'&immutable=1' if immutable else ''}" if readonly else str(path)
        self.db = sqlite3.connect(target, uri=readonly, isolation_level=None, check_same_thread=False, timeout=120)
        self._known: dict[str, None] = {}
        # Rows put since the last commit, written in one statement per table at commit.
        self._rows: dict[str, tuple] = {}
        self._blocks: list[tuple[str, str]] = []
        self._schemas: list[tuple[str, str]] = []
        if readonly:
            return
        self.db.execute(f"PRAGMA journal_mode={'DELETE' if self.network else 'WAL'}")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS replies (" + ", ".join(
            f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in _TABLE_COLUMNS) + ")")
        self.db.execute("CREATE TABLE IF NOT EXISTS blocks (id TEXT PRIMARY KEY, text TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS schemas (sha256 TEXT PRIMARY KEY, json TEXT)")
        have = {row[1] for row in self.db.execute("PRAGMA table_info(replies)")}
        for column in _TABLE_COLUMNS:       # a store written before these columns existed
            if column not in have:
                self.db.execute(f"ALTER TABLE replies ADD COLUMN {column}")

    def get(self, key: str) -> Optional[StoredReply]:
        row = self._rows.get(key)
        if row is None:
            row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM replies WHERE key=?", (key,)).fetchone()
        return StoredReply(*row[:len(_COLUMNS)]) if row else None

    def put(self, reply: StoredReply, messages: list[dict]) -> None:
        """Stored with the next commit()."""
        self._rows[reply.key] = (*(getattr(reply, c) for c in _COLUMNS), self._put_prompt(messages), None, time.time())

    def _put_prompt(self, messages: list[dict]) -> str:
        encoded = []
        for m in messages:
            ids = []
            for block in m["content"].split("\n\n"):
                bid = _block_id(block)
                ids.append(bid)
                if bid not in self._known:
                    self._blocks.append((bid, block))
                    self._known[bid] = None
            encoded.append([m["role"], ids])
        return _compact(encoded)

    def put_schema(self, sha: str, schema: dict) -> None:
        self._schemas.append((sha, canonical(schema)))

    def schema(self, sha: str) -> Optional[dict]:
        self.commit()
        row = self.db.execute("SELECT json FROM schemas WHERE sha256=?", (sha,)).fetchone()
        return json.loads(row[0]) if row else None

    def commit(self) -> None:
        """One transaction for everything put since the last commit: durable when it returns."""
        if not (self._rows or self._blocks or self._schemas):
            return
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO blocks (id, text) VALUES (?, ?)", self._blocks)
            self.db.executemany("INSERT OR IGNORE INTO schemas (sha256, json) VALUES (?, ?)", self._schemas)
            self.db.executemany(f"INSERT OR REPLACE INTO replies ({', '.join(_TABLE_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(_TABLE_COLUMNS))})", list(self._rows.values()))
            self.db.execute("COMMIT")
        except BaseException:     # nothing of it is stored: the blocks are not known after all
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._known.clear()
            raise
        self._rows.clear()
        self._blocks.clear()
        self._schemas.clear()
        if len(self._known) > _BLOCK_CACHE:
            self._known.clear()

    def messages(self, key: str) -> Optional[list[dict]]:
        """The conversation a stored reply answered, as rendered."""
        self.commit()
        row = self.db.execute("SELECT prompt, messages FROM replies WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        prompt, legacy = row
        if prompt is None:
            return json.loads(legacy)
        out = []
        for role, ids in json.loads(prompt):
            texts = dict(self.db.execute(f"SELECT id, text FROM blocks WHERE id IN ({', '.join('?' * len(ids))})",
                                         ids).fetchall())
            out.append({"role": role, "content": "\n\n".join(texts[i] for i in ids)})
        return out

    def copy_from(self, other: Store, key: str) -> Optional[StoredReply]:
        """A reply of another store (the shared cache), with its prompt, put into this one."""
        hit = other.get(key)
        if hit is not None:
            self.put(hit, other.messages(key) or [])
            sha = json.loads(hit.request).get("schema")
            schema = other.schema(sha) if isinstance(sha, str) else None
            if isinstance(sha, str) and schema is not None:
                self.put_schema(sha, schema)
        return hit

    def count(self) -> int:
        self.commit()
        return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        if not self.readonly:
            self.commit()
        self.db.close()


class NotAStore(Exception):
    """A file that is not a reply store glan-local wrote: one line naming it."""


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Store]:
    """A run's store, opened so that nothing is written in its directory: SQLite's read-only
    mode still creates -shm and -wal files beside a WAL database, so the file is opened
    immutable. Replies committed to a WAL that was never checkpointed (a run killed before it
    closed its store) are not in the file itself: then a copy of both, made elsewhere, is read."""
    if not path.is_file():
        raise NotAStore(f"{path} is missing: the run's replies are needed")
    wal = path.with_name(path.name + "-wal")
    with tempfile.TemporaryDirectory(prefix="glan-verify-") as tmp:
        if wal.is_file() and wal.stat().st_size > 0:
            copy = Path(tmp) / path.name
            shutil.copyfile(path, copy)
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
            store = Store(copy, network=False)
        else:
            store = Store(path, network=False, readonly=True, immutable=True)
        try:
            have = {row[1] for row in store.db.execute("PRAGMA table_info(replies)")}
            if not {"key", "text", "status"} <= have:
                raise NotAStore(f"{path} holds no glan-local replies (no replies table)")
            store.db.execute("SELECT count(*) FROM replies").fetchone()
        except sqlite3.DatabaseError as e:
            store.db.close()
            raise NotAStore(f"{path} is not a glan-local reply store ({e})") from None
        except NotAStore:
            store.db.close()
            raise
        try:
            yield store
        finally:
            store.db.close()


class CacheDir:
    """cache_dir: a reply store shared by runs. On a local disk, one file, replies.sqlite, which
    several processes of one machine may write (WAL). On a network file system, every writer
    gets a file of its own (replies-<host>-<pid>-<random>.sqlite) and only reads the others, so
    jobs on several nodes never write one file: a file that cannot be read consistently while
    another node writes it is a cache miss (the reply is generated again), never a corruption."""

    RESCAN_S = 60.0

    def __init__(self, d: Path):
        self.dir = d
        if check_locking(d, "cache_dir"):
            # Random, not the time: two runs of one process (a sweep's jobs) may start within a second.
            name = f"replies-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.sqlite"
            self.own = Store(d / name, network=True)
        else:
            self.own = Store(d / "replies.sqlite", network=False)
        self._others: dict[Path, Optional[Store]] = {}
        self._scanned = 0.0

    def find(self, key: str) -> tuple[Optional[StoredReply], Optional[Store]]:
        hit = self.own.get(key)
        if hit is not None or not self.own.network:
            return hit, self.own
        if time.monotonic() - self._scanned > self.RESCAN_S:
            self._scanned = time.monotonic()
            for p in sorted(self.dir.glob("replies*.sqlite")):
                if p != self.own.path and p not in self._others:
                    self._others[p] = None
        for p, store in self._others.items():
            try:
                if store is None:
                    store = self._others[p] = Store(p, network=True, readonly=True)
                hit = store.get(key)
                if hit is not None:
                    return hit, store
            except sqlite3.Error:     # being written on another node, or locked: a miss
                continue
        return None, None

    def put(self, reply: StoredReply, messages: list[dict]) -> None:
        self.own.put(reply, messages)

    def put_schema(self, sha: str, schema: dict) -> None:
        self.own.put_schema(sha, schema)

    def commit(self) -> None:
        self.own.commit()

    def close(self) -> None:
        self.own.close()
        for store in self._others.values():
            if store is not None:
                store.db.close()


class Replies:
    """The run's own store, backed by an optional shared cache across runs (CacheDir).

    A reply found only in the cache is copied into the run's store, so a run directory always
    holds every reply its dataset came from (what `glan-local-verify` replays). A read-only
    Replies (verify's) stores nothing: what the walk would put is dropped.
    """

    def __init__(self, run_store: Store, cache: Optional[CacheDir] = None, readonly: bool = False):
        self.run, self.cache, self.readonly = run_store, cache, readonly
        # The stores of the other jobs of a sweep walked in this process (forest.py): a reply one
        # of them has is taken from it, as from the cache.
        self.peers: list[Store] = []

    def get(self, key: str) -> tuple[Optional[StoredReply], str]:
        hit = self.run.get(key)
        if hit is not None:
            return hit, "run"
        if self.cache is not None:
            hit, source = self.cache.find(key)
            if hit is not None and source is not None:
                try:
                    self.run.copy_from(source, key)
                except sqlite3.Error:     # another writer's file, unreadable right now: a miss
                    return None, ""
                return hit, "cache"
        for peer in self.peers:
            try:
                hit = peer.get(key)
                if hit is not None:
                    self.run.copy_from(peer, key)
                    return hit, "cache"
            except sqlite3.ProgrammingError:    # a job that stopped has closed its store
                continue
        return None, ""

    def put(self, reply: StoredReply, messages: list[dict]) -> None:
        if self.readonly:
            return
        self.run.put(reply, messages)
        if self.cache is not None:
            self.cache.put(reply, messages)

    def put_schema(self, sha: str, schema: dict) -> None:
        if self.readonly:
            return
        self.run.put_schema(sha, schema)
        if self.cache is not None:
            self.cache.put_schema(sha, schema)

    def commit(self) -> None:
        """One transaction per engine step: what was put since the last commit is now durable."""
        if self.readonly:
            return
        self.run.commit()
        if self.cache is not None:
            self.cache.commit()

    def close(self) -> None:
        if self.readonly:
            return     # whoever opened a read-only store closes it (store.read_only)
        self.run.close()
        if self.cache is not None:
            self.cache.close()

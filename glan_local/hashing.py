"""Content digests of input files: every byte hashed once, then remembered.

A teacher is identified by the sha256 of every byte of its files, so that a model edited in
place (a 4-byte patch inside one tensor included) is never mistaken for the original. Hashing
140 GB takes minutes, so a digest is remembered under the glan-local cache directory, keyed by
what changes whenever the file's bytes do: (device, inode, size, mtime_ns, ctime_ns). ctime
cannot be set back by a user (touch -r restores mtime only), so an edit that hides its mtime
is still seen. A file of the Hugging Face hub cache is a symlink to blobs/<sha256 of the
content>: that name is taken as its digest when the file is whole (for safetensors, its size
is what its header says).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from .atomic import atomic_write_text

CHUNK = 8 << 20          # hashlib releases the GIL on large updates: files hash in parallel
WORKERS = min(4, os.cpu_count() or 1)
REPORT_EVERY_S = 10.0
SAY_ABOVE = 64 << 20     # smaller inputs hash in well under a second: no line for them
REMEMBER_ABOVE = 1 << 20  # a small file is hashed again each time, rather than leave a digest file behind
_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    from .embedded import cache_root

    return cache_root() / "digests"


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"


def _safetensors_size(path: Path) -> Optional[int]:
    """The size a safetensors file must have, from its header; None when it does not parse."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100 << 20:
                return None
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
        return 8 + n + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def hub_blob_digest(path: Path) -> Optional[str]:
    """The sha256 a Hugging Face cache blob is named by, when path is one and is whole."""
    real = Path(os.path.realpath(path))
    if real.parent.name != "blobs" or not _HEX64.fullmatch(real.name):
        return None
    if path.suffix == ".safetensors" and _safetensors_size(real) != real.stat().st_size:
        return None        # a truncated download keeps its name: hash it instead
    return real.name


def _remembered(st: os.stat_result) -> Optional[str]:
    try:
        text = (cache_dir() / _stat_key(st)).read_text().strip()
    except OSError:
        return None
    return text if _HEX64.fullmatch(text) else None


def _remember(st: os.stat_result, digest: str) -> None:
    try:
        d = cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / _stat_key(st), digest + "\n", shared=True)
    except OSError:
        pass     # a read-only cache costs a second hashing next time, nothing else


def sha256_files(paths: list[Path], what: str = "files",
                 say: Optional[Callable[[str], None]] = None) -> dict[str, str]:
    """{file name: sha256} of each path: from the hub cache's blob name, from the remembered
    digests, or hashed now (in parallel, with a progress line every 10 s through `say`)."""
    out: dict[str, str] = {}
    todo: list[tuple[Path, os.stat_result]] = []
    for p in paths:
        st = os.stat(p)
        digest = hub_blob_digest(p) or (_remembered(st) if st.st_size >= REMEMBER_ABOVE else None)
        if digest:
            out[p.name] = digest
        else:
            todo.append((p, st))
    if not todo:
        return out
    total = sum(st.st_size for _, st in todo)
    done = [0]
    lock = threading.Lock()
    t0 = time.monotonic()
    if total < SAY_ABOVE:
        say = None
    if say is not None:
        say(f"hashing {what} once ({len(todo)} files, {total / 1e6:,.0f} MB; remembered in {cache_dir()})")

    def one(item: tuple[Path, os.stat_result]) -> tuple[str, str]:
        p, st = item
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                with lock:
                    done[0] += len(chunk)
        after = os.stat(p)
        if st.st_size >= REMEMBER_ABOVE and _stat_key(after) == _stat_key(st):   # unchanged while read
            _remember(st, h.hexdigest())
        return p.name, h.hexdigest()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(one, item) for item in todo]
        last = t0
        while not all(f.done() for f in futures):
            time.sleep(0.05)
            if say is not None and time.monotonic() - last >= REPORT_EVERY_S:
                last = time.monotonic()
                say(f"hashing {what}: {done[0] / 1e6:,.0f} of {total / 1e6:,.0f} MB "
                    f"({done[0] / 1e6 / (last - t0):,.0f} MB/s)")
        for f in futures:
            name, digest = f.result()
            out[name] = digest
    if say is not None:
        dt = max(time.monotonic() - t0, 1e-6)
        say(f"hashed {what}: {total / 1e6:,.0f} MB in {dt:.1f} s ({total / 1e6 / dt:,.0f} MB/s)")
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

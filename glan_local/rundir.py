"""A run directory: who may write it (its lock, the config it holds, overwrite) and the files
that describe a run (summary.json, manifest.json, the quality tail).

`run`, `merge` and `verify` all go through here. Nothing here knows a level: the recipe hands
over figures, this module writes them, each with the one atomic write (atomic.py), so that a
crash leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional

from . import manifest
from .atomic import write_json
from .errors import ConfigError
from .identity import Identity
from .store import Store, check_locking

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig

# Everything a run writes but the reply store: removed by overwrite=true. The store stays,
# since its replies are keyed by content and can only be reused, never wrongly.
OUTPUTS = ("data", "levels", "manifest.json", "summary.json", "taxonomy.yaml", "publish", "regenerated.json")
CONFIG_FILE = "run-config.json"


# --- who may write it -----------------------------------------------------------------------

def writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError("out_dir", f"cannot write to '{run_dir}' ({e.strerror})",
                          "choose a writable directory with out_dir=<path>")


def try_lock(run_dir: Path) -> Optional[IO]:
    """Hold run_dir's lock (flock: NFS carries it to every node, Lustre with -o flock too; see
    store.check_locking) until the returned file is closed; None when another process holds it."""
    f = open(run_dir / ".lock", "w")     # noqa: SIM115 (held open: the lock lasts as long as the file)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


@contextlib.contextmanager
def reading(run_dir: Path) -> Iterator[None]:
    """While a run directory is read (verify, merge's shards): its lock held shared, so that no
    run starts writing it meanwhile (a run takes it exclusive). Opened read-only and only if it
    exists, so nothing is created; Busy when a run holds it now."""
    path = run_dir / ".lock"
    if not path.exists():
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise Busy(run_dir) from None
            raise
        yield
    finally:
        os.close(fd)


class Busy(Exception):
    """A run directory that a running glan-local holds."""

    def __init__(self, run_dir: Path):
        super().__init__(f"{run_dir}: a glan-local run is still using it (its lock is held)")
        self.run_dir = run_dir


def lock(run_dir: Path) -> IO:
    f = try_lock(run_dir)
    if f is None:
        raise ConfigError("out_dir", f"another glan-local run is using '{run_dir}'",
                          "wait for it to finish, or give this run another out_dir=<path>")
    return f


def check_stores(cfg: GlanConfig, run_dir: Path) -> None:
    """A reply store that is not a SQLite database, or a cache_dir that cannot hold one, stops
    the run before the model loads (opening creates a missing store, as the run would)."""
    stores = [("out_dir", run_dir / "store.sqlite")]
    if cfg.cache_dir:
        stores.append(("cache_dir", Path(cfg.cache_dir).expanduser() / "replies.sqlite"))
    for key, path in stores:
        try:
            check_locking(path.parent, key)
            if key == "out_dir" or not check_locking(path.parent, key):   # on a network FS, writers own their files
                Store(path).close()
        except (OSError, sqlite3.DatabaseError) as e:
            why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else \
                (getattr(e, "strerror", None) or e)
            raise ConfigError(key, f"cannot open the reply store '{path}' ({why})",
                              f"move a damaged store away (its replies are lost) or point {key} at another "
                              "writable directory")


def write_config(run_dir: Path, container: dict, ident: Identity) -> None:
    """run-config.json: which run this directory holds, from the first second of a run (the
    manifest comes at its end); the quality step reads the config from it too."""
    write_json(run_dir / CONFIG_FILE, {"identity_sha256": ident.digest, "identity": ident.as_dict(),
                                       "config": container}, indent=1)


def held(run_dir: Path) -> Optional[Identity]:
    """The identity of the run a directory holds; None for a new directory. ConfigError when the
    directory holds something else: a run of an earlier glan-local, or a damaged file."""
    owner = run_dir / CONFIG_FILE
    if not owner.exists():
        return None
    try:
        return Identity.from_dict(json.loads(owner.read_text(encoding="utf-8"))["identity"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        why = ("it was made by an earlier glan-local, whose run identity mixed paths with content"
               if isinstance(e, (KeyError, ValueError)) and not isinstance(e, json.JSONDecodeError)
               else f"{owner.name} is damaged ({type(e).__name__})")
        raise _Other(why) from None


class _Other(Exception):
    pass


def claim(run_dir: Path, ident: Identity, container: dict, overwrite: bool, regen: bool = False) -> None:
    """Refuse a directory that holds another run, naming what differs, unless told to overwrite.
    regen: the same run with new regeneration rounds after its own is the same run."""
    try:
        old = held(run_dir)
        why = None if old is None or old.digest == ident.digest or (regen and ident.extends(old)) else \
            _why(old.differences(ident))
    except _Other as e:
        why = str(e)
    if why is not None:
        if not overwrite:
            raise ConfigError("out_dir", f"'{run_dir}' holds another run: {why}",
                              "add overwrite=true to replace its outputs (its reply store is kept, and reused "
                              "wherever replies still match), or give a new out_dir=<path>")
        for name in OUTPUTS:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    write_config(run_dir, container, ident)


def _why(differences: list[str]) -> str:
    more = f" (and {len(differences) - 1} more difference{'s' if len(differences) > 2 else ''})" \
        if len(differences) > 1 else ""
    return differences[0] + more


# --- the files that describe a run ------------------------------------------------------------

def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(run_dir / "summary.json", summary)


def write_manifest(run_dir: Path, fields: dict, container: dict) -> dict:
    """manifest.json: the given fields (identity first), the config and the fingerprints of the
    outputs; the quality step's files are added by quality_tail once it has written them."""
    man = {"glan_local": manifest.MANIFEST, **fields, "config": container,
           "fingerprints": manifest.fingerprints(run_dir), "published": {}}
    write_json(run_dir / "manifest.json", man)
    return man


def publish_dir(cfg: GlanConfig, run_dir: Path) -> Path:
    return Path(cfg.quality.out_dir).expanduser() if cfg.quality.out_dir else run_dir / "publish"


def record_published(run_dir: Path, out: Path) -> None:
    """The manifest's hashes of the quality step's files, after it (re)wrote them."""
    man = manifest.read(run_dir)
    if man is not None:
        man["published"] = manifest.published(run_dir, out)
        write_json(run_dir / "manifest.json", man)


def quality_tail(cfg: GlanConfig, run_dir: Path, summary: dict, say: Callable[[str], None]) -> None:
    """The quality step over a finished run's data/, its figures added to summary.json. Last,
    so a failure here leaves a complete run (glan-local-quality can redo this step); after
    summary.json is written, since the card and the report read the run's figures."""
    from .quality.pipeline import run_quality

    out = publish_dir(cfg, run_dir)
    summary["quality"] = run_quality(cfg.quality, out, run_dir=run_dir, seed=cfg.seed, say=say)
    write_summary(run_dir, summary)
    record_published(run_dir, out)

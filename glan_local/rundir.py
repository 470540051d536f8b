"""A run directory: who may write it (its lock, the config it holds, overwrite) and the files
that describe a run (summary.json, manifest.json, the quality tail).

`run`, `merge` and `verify` all go through here. Nothing here knows a level: the recipe hands
over figures, this module writes them, each with the one atomic write (atomic.py), so that a
crash leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import fcntl
import json
import shutil
import sqlite3
from pathlib import Path
from typing import IO, Any, Callable, Optional

from . import manifest
from .atomic import write_json
from .errors import ConfigError
from .store import Store, check_locking

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
    f = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def lock(run_dir: Path) -> IO:
    f = try_lock(run_dir)
    if f is None:
        raise ConfigError("out_dir", f"another glan-local run is using '{run_dir}'",
                          "wait for it to finish, or give this run another out_dir=<path>")
    return f


def check_stores(cfg: Any, run_dir: Path) -> None:
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
            why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else (getattr(e, "strerror", None) or e)
            raise ConfigError(key, f"cannot open the reply store '{path}' ({why})",
                              f"move a damaged store away (its replies are lost) or point {key} at another "
                              "writable directory")


def write_config(run_dir: Path, container: dict) -> None:
    """run-config.json: which config this directory holds, from the first second of a run (the
    manifest comes at its end); the quality step reads the config from it too."""
    write_json(run_dir / CONFIG_FILE, {"config_hash": manifest.config_hash(container), "config": container}, indent=1)


def claim(run_dir: Path, container: dict, overwrite: bool) -> None:
    """Refuse a directory that holds a run of another config, unless told to overwrite."""
    owner = run_dir / CONFIG_FILE
    if owner.exists() and json.loads(owner.read_text()).get("config_hash") != manifest.config_hash(container):
        if not overwrite:
            raise ConfigError("out_dir", f"'{run_dir}' holds a run of a different config",
                              "choose another out_dir, or add overwrite=true to replace its outputs "
                              "(its reply store is kept and reused)")
        for name in OUTPUTS:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    write_config(run_dir, container)


# --- the files that describe a run ------------------------------------------------------------

def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(run_dir / "summary.json", summary)


def write_manifest(run_dir: Path, fields: dict, container: dict) -> dict:
    """manifest.json: the given fields, with the config and the fingerprints of the outputs."""
    man = {"glan_local": "glan-local run manifest v1", "config": container,
           "config_hash": manifest.config_hash(container), **fields,
           "fingerprints": manifest.fingerprints(run_dir)}
    write_json(run_dir / "manifest.json", man)
    return man


def quality_tail(cfg: Any, run_dir: Path, summary: dict, say: Callable[[str], None]) -> None:
    """The quality step over a finished run's data/, its figures added to summary.json. Last,
    so a failure here leaves a complete run (glan-local-quality can redo this step); after
    summary.json is written, since the card and the report read the run's figures."""
    from .quality.pipeline import run_quality

    out = Path(cfg.quality.out_dir).expanduser() if cfg.quality.out_dir else run_dir / "publish"
    summary["quality"] = run_quality(cfg.quality, out, run_dir=run_dir, seed=cfg.seed, say=say)
    write_summary(run_dir, summary)

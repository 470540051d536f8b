"""`glan-local-merge OUT SHARD_DIR...`: the run directories of one command's shards, as one run.

OUT gets what an unsharded run of the same config writes: levels/*.jsonl in tree order (each
shard's files are sorted already; they are merged as streams, so memory does not grow with the
dataset), taxonomy.yaml, data/ (parquet + JSONL), the union of the shards' reply stores, a
summary with summed counts, and a manifest whose config is the shards' with shard reset to
{index: 0, count: 1}: `glan-local-verify OUT` replays the unsharded config from the merged
store, and `glan-local <same overrides> out_dir=OUT` finds every reply there.
"""
from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from . import levels, logs, manifest, rundir
from .atomic import atomic_path, write_json
from .config import ConfigError, from_container
from .export import export_dataset, record_key
from .identity import Identity
from .rounds import ROUNDS_FILE, scope
from .store import TABLES, NotAStore, Store, read_only
from .summary import format_summary

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig

log = logging.getLogger(__name__)
# Times: shards run side by side, so the merged run took as long as its slowest shard.
_MAX_KEYS = {"wall_s", "engine_start_s", "generation_s"}


class MergeError(Exception):
    """Shards that cannot be merged: one line saying which and why."""


def unsharded(container: dict) -> dict:
    """The config with the shard keys reset: what every shard of one command shares."""
    out = json.loads(json.dumps(container))
    out["shard"] = {"index": 0, "count": 1}
    return out


def _shard(man: dict) -> dict:
    return {"index": 0, "count": 1, **(man["config"].get("shard") or {})}


def _read_shards(dirs: list[Path]) -> list[tuple[Path, dict]]:
    if not dirs:
        raise MergeError("no shard directories given")
    shards = []
    for d in dirs:
        try:
            man = manifest.read(d) if d.is_dir() else None
        except manifest.Unreadable as e:
            raise MergeError(str(e)) from None
        if man is None:
            raise MergeError(f"{d}: no manifest.json: not a finished glan-local run (finish or resume it first)")
        if not (d / "store.sqlite").is_file():
            raise MergeError(f"{d}: no store.sqlite: the shard's replies are needed to verify the merged run")
        error = _json(d / "summary.json").get("error") if (d / "summary.json").is_file() else None
        if error:
            raise MergeError(f"{d}: the shard failed ({error}): rerun it with the fix it names, then merge")
        shards.append((d, man))
    return shards


def _identity(d: Path, man: dict) -> Identity:
    try:
        return Identity.from_dict(man["identity"])
    except (KeyError, TypeError, ValueError) as e:
        raise MergeError(f"{d / 'manifest.json'} has no identity glan-local wrote ({e})") from None


def check(shards: list[tuple[Path, dict]]) -> None:
    """Refuse shards of different runs (config, inputs, model, templates: their identity but for
    shard.index and each shard's own rounds), rounds made in another shard, and duplicate or
    missing indices."""
    d0, m0 = shards[0]
    want = _identity(d0, m0).without_shard()
    for d, m in shards[1:]:
        diff = want.differences(_identity(d, m).without_shard())
        if diff:
            raise MergeError(f"{d} and {d0} are not shards of one run: {diff[0]}"
                             + (f" (and {len(diff) - 1} more)" if len(diff) > 1 else "")
                             + ": merge the shards of one command only")
    counts = {_shard(m)["count"] for _, m in shards}
    if len(counts) > 1:
        raise MergeError(f"the shards disagree on shard.count ({sorted(counts)}): merge the shards of one command only")
    count = counts.pop()
    seen: dict[int, Path] = {}
    for d, m in shards:
        i = _shard(m)["index"]
        if i in seen:
            raise MergeError(f"shard index {i} appears twice ({seen[i]} and {d})")
        seen[i] = d
        for r in m.get("regenerated") or []:
            made_in = scope(r)
            if made_in is not None and made_in != (i, count):
                raise MergeError(f"{d} (shard {i}) holds regeneration round {r.get('round')} of shard "
                                 f"{made_in[0]}: its regenerated.json was copied from another shard")
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise MergeError(f"missing shard indices {missing} of shard.count={count}: give every shard's run directory")


def merged_rounds(shards: list[tuple[Path, dict]]) -> list[dict]:
    """Every shard's regeneration rounds, each scoped to the shard that made it (rounds.Rounds
    applies it to that shard's disciplines only), in round order."""
    out = []
    for _, m in shards:
        sh = _shard(m)
        for r in m.get("regenerated") or []:
            out.append({**r, "scope": {"index": sh["index"], "count": sh["count"]}})
    return sorted(out, key=lambda r: (r["round"], r["scope"]["index"]))


def _json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise MergeError(f"{path} cannot be read ({type(e).__name__}): not a file glan-local wrote") from None
    if not isinstance(out, dict):
        raise MergeError(f"{path} is not a JSON object: not a file glan-local wrote")
    return out


def _records(path: Path) -> Iterator[tuple[tuple, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    key = record_key(json.loads(line))
                except (ValueError, AttributeError, UnicodeDecodeError):
                    raise MergeError(f"{path} line {n} is not a JSON record: the shard's files are damaged") from None
                yield key, line if line.endswith("\n") else line + "\n"


def merge_levels(out: Path, dirs: list[Path], names: list[str]) -> dict[str, int]:
    """k-way merge of the shards' sorted level files (same order as export.finalize_levels)."""
    (out / "levels").mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in names + ["failures"]:
        sources = [d / "levels" / f"{name}.jsonl" for d in dirs]
        absent = [str(s) for s in sources if not s.is_file()]
        if absent:
            raise MergeError(f"{absent[0]} is missing: not a finished glan-local run")
        n = 0
        with atomic_path(out / "levels" / f"{name}.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
            for _, line in heapq.merge(*(_records(s) for s in sources), key=lambda kv: kv[0]):
                f.write(line)
                n += 1
        counts[name] = n
        levels.saved(name, out)
    return counts


def merge_stores(out: Path, dirs: list[Path]) -> int:
    """The union of the shards' replies (failed attempts too), prompt blocks and schemas in
    out/store.sqlite. The shards' stores are only read (store.read_only)."""
    store = Store(out / "store.sqlite")
    try:
        for d in dirs:
            with read_only(d / "store.sqlite") as shard:
                have = {t: {row[1] for row in shard.db.execute(f"PRAGMA table_info({t})")} for t in TABLES}
                for table, cols in TABLES.items():
                    names = [c for c in cols if c in have[table]]
                    if not names:
                        continue
                    rows = shard.db.execute(f"SELECT {', '.join(names)} FROM {table}")
                    store.db.execute("BEGIN")
                    while batch := rows.fetchmany(10_000):
                        store.db.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES "
                                             f"({', '.join('?' * len(names))})", batch)
                    store.db.execute("COMMIT")
        return store.count()
    except NotAStore as e:
        raise MergeError(str(e)) from None
    finally:
        store.close()


def _combine(values: list[Any], key: str = "") -> Any:
    """Counts are summed, times are the slowest shard's, tok/s the shards' rates added up
    (they run side by side); anything else is the first shard's."""
    first = values[0]
    if isinstance(first, bool) or first is None or isinstance(first, (str, list)):
        return first
    if isinstance(first, (int, float)):
        nums = [v for v in values if isinstance(v, (int, float))]
        return max(nums) if key in _MAX_KEYS else round(sum(nums), 2) if isinstance(first, float) else sum(nums)
    if isinstance(first, dict):
        if key == "failures":
            total: Counter = Counter()
            for v in values:
                total.update(v or {})
            return dict(total)
        keys = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
        return {k: _combine([v[k] for v in values if isinstance(v, dict) and k in v], k) for k in keys}
    return first


def merge_summaries(out: Path, shards: list[tuple[Path, dict]], rows: int) -> dict:
    summaries = [_json(d / "summary.json") if (d / "summary.json").exists() else {} for d, _ in shards]
    # Figures are combined where they are counts (levels, totals, taxonomy); the rest is shard 0's.
    summary = {k: v for k, v in summaries[0].items() if k != "quality"}
    for block in ("levels", "totals", "taxonomy"):
        parts = [s[block] for s in summaries if block in s]
        if parts:
            summary[block] = _combine(parts, block)
    summary.update(run_dir=str(out), rows=rows, shards=[
        {"index": _shard(m)["index"], "run_dir": str(d), "rows": s.get("rows"),
         **{k: s.get("totals", {}).get(k) for k in ("planned", "failed", "generated", "output_tokens",
                                                    "output_tokens_per_s", "wall_s")}}
        for (d, m), s in zip(shards, summaries)])
    return summary


def merge(out: Path, shard_dirs: list[Path], quality: Optional[bool] = None,
          say: Callable[[str], None] = log.info) -> dict:
    """Merge finished shard run directories into out (new or empty); returns the summary."""
    shards = _read_shards([Path(d) for d in shard_dirs])
    check(shards)
    try:
        with contextlib.ExitStack() as stack:
            for d, _ in shards:     # a shard still running holds its lock: refused, not half-read
                stack.enter_context(rundir.reading(d))
            return _merge(out, shards, quality, say)
    except rundir.Busy as e:
        raise MergeError(f"{e}: wait for the shard to finish, then merge") from None


def _merge(out: Path, shards: list[tuple[Path, dict]], quality: Optional[bool], say: Callable[[str], None]) -> dict:
    shards.sort(key=lambda dm: _shard(dm[1])["index"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"{out} exists and is not empty: give a new directory")
    dirs = [d for d, _ in shards]
    m0 = shards[0][1]
    container = unsharded(m0["config"])
    container["out_dir"] = str(out)
    cfg = from_container(container, files=False)
    if quality is None:
        quality = cfg.quality.enabled
    if quality:
        from .quality.pipeline import preflight

        cfg.validate()      # now with the files the quality step will read
        preflight(cfg.quality)
    for d in dirs:          # every shard's store readable, before anything is written
        try:
            with read_only(d / "store.sqlite"):
                pass
        except NotAStore as e:
            raise MergeError(str(e)) from None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handler: Optional[logging.Handler] = logs.attach(out)
    try:
        return _merge_into(out, shards, dirs, m0, container, cfg, quality, say)
    except BaseException:
        logs.detach(handler)
        handler = None
        if created:         # a half-merged directory would pass for a run: none is left
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        logs.detach(handler)


def _merge_into(out: Path, shards: list[tuple[Path, dict]], dirs: list[Path], m0: dict, container: dict,
                cfg: GlanConfig, quality: bool, say: Callable[[str], None]) -> dict:
    say(f"merging {len(dirs)} shards into {out}")
    enabled = levels.enabled(cfg)
    merge_levels(out, dirs, enabled)
    rows = export_dataset(out, enabled[-1])
    replies = merge_stores(out, dirs)
    say(f"{rows} rows; {replies} replies in {out / 'store.sqlite'}")
    summary = merge_summaries(out, shards, rows)
    rundir.write_summary(out, summary)
    # As a run of the unsharded config would: `glan-local <overrides> out_dir=OUT` resumes here,
    # and glan-local-regen OUT adds its rounds after the shards'.
    rounds = merged_rounds(shards)
    base = _identity(*shards[0]).without_shard()
    ident = Identity({**base.config, "shard": container["shard"]}, base.inputs, rounds)
    rundir.write_config(out, container, ident)
    if rounds:
        write_json(out / ROUNDS_FILE, rounds, indent=1)
    schemas: dict = {}
    for _, m in shards:
        schemas.update(m.get("schemas_sha256") or {})
    own = ("glan_local", "config", "identity", "identity_sha256", "fingerprints", "published", "regenerated")
    rundir.write_manifest(out, {"identity_sha256": ident.digest, "identity": ident.as_dict(),
                                **{k: v for k, v in m0.items() if k not in own},
                                "regenerated": rounds,
                                "schemas_sha256": dict(sorted(schemas.items())),
                                "merged_from": [{"run_dir": str(d), "shard": _shard(m),
                                                 "identity_sha256": m["identity_sha256"]} for d, m in shards]},
                          container)
    if rows and quality:
        # Over the whole dataset: near-duplicates across shards are found here, not in a shard.
        rundir.quality_tail(cfg, out, summary, say)
    print(format_summary(summary), flush=True)
    say(f"dataset: {out / 'data'} ({rows} rows); check it with: glan-local-verify {out}")
    return summary


def main(argv: Optional[list[str]] = None) -> None:
    import os

    ap = argparse.ArgumentParser(
        prog="glan-local-merge",
        description="Merge the run directories of one command's shards (shard.index=0..N-1) into one run.")
    ap.add_argument("out", type=Path, help="the merged run directory (new or empty)")
    ap.add_argument("shard_dirs", type=Path, nargs="+", metavar="SHARD_DIR", help="every shard's run directory")
    ap.add_argument("--no-quality", dest="quality", action="store_false", default=None,
                    help="skip the quality step (dedup, decontamination, publish, report) on the merged data")
    args = ap.parse_args(argv)
    logs.terminal("glan-local-merge")
    try:
        merge(args.out, args.shard_dirs, quality=args.quality)
    except KeyboardInterrupt:
        print("[glan-local-merge] stopped by SIGINT: the shards are untouched; remove the merged directory "
              "and merge again", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("GLAN_DEBUG") == "1":
            raise
        known = isinstance(e, (MergeError, ConfigError))
        text = str(e) if known else \
            f"{type(e).__name__}: {' '.join(str(e).split())[:200]} (GLAN_DEBUG=1 shows the traceback)"
        print(text if isinstance(e, ConfigError) else f"merge error: {text}", file=sys.stderr)
        sys.exit(2 if known else 1)


if __name__ == "__main__":
    main()

"""The recipe: check everything cheap, start the teacher, walk the tree, export, summarise."""
from __future__ import annotations

import fcntl
import resource
import signal
import json
import sqlite3
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import OmegaConf

from . import manifest, regen, shard
from . import levels as levels_
from .config import CannotProduce, ConfigError, validate
from .engine import engine_identity, self_check
from .atomic import atomic_write_text
from .export import Sinks, export_dataset, finalize_levels, format_summary
from .levels import taxonomy
from .levels.base import Context
from .model import check_context, check_turn_end, model_identity, resolve_model_path
from .plan import attempts_rule, check_planned
from .regen import Rounds
from .progress import Progress, quiet
from .prompts import Templates
from .scheduler import Scheduler
from .store import CacheDir, Replies, Store, check_locking

# Everything a run writes but the reply store: removed by overwrite=true. The store stays,
# since its replies are keyed by content and can only be reused, never wrongly.
OUTPUTS = ("data", "levels", "manifest.json", "summary.json", "taxonomy.yaml", "publish", "regenerated.json")


class Interrupted(Exception):
    """SIGINT/SIGTERM: stopped between replies, everything finished so far is stored."""


def _stop_on_signals() -> dict:
    """SIGTERM (a scheduler's kill) and SIGUSR2 (Slurm's warning before the time limit, see
    hydra.launcher.signal_delay_s) behave like Ctrl-C: stop, keep what is stored."""
    got: dict = {}

    def handler(signum, frame):
        if got:         # already stopping: Slurm signals every process of a job, and a sweep
            return      # parent passes its signal on too, so the same stop may arrive twice
        got["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, handler)
    return got


def _say(msg: str) -> None:
    print(f"[glan-local] {msg}", file=sys.stderr, flush=True)


def _writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError("out_dir", f"cannot write to '{run_dir}' ({e.strerror})",
                          "choose a writable directory with out_dir=<path>")


def _check_stores(cfg: Any, run_dir: Path) -> None:
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


def lock_run_dir(run_dir: Path):
    """Hold run_dir's lock (flock: NFS carries it to every node, Lustre with -o flock too; see
    store.check_locking) until the returned file is closed; None when another process holds it."""
    f = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _lock(run_dir: Path):
    f = lock_run_dir(run_dir)
    if f is None:
        raise ConfigError("out_dir", f"another glan-local run is using '{run_dir}'",
                          "wait for it to finish, or give this run another out_dir=<path>")
    return f


def _claim(run_dir: Path, container: dict, overwrite: bool) -> None:
    """Refuse a directory that holds a run of another config, unless told to overwrite."""
    owner = run_dir / "run-config.json"
    want = manifest.config_hash(container)
    if owner.exists():
        have = json.loads(owner.read_text()).get("config_hash")
        if have != want:
            if not overwrite:
                raise ConfigError("out_dir", f"'{run_dir}' holds a run of a different config",
                                  "choose another out_dir, or add overwrite=true to replace its outputs "
                                  "(its reply store is kept and reused)")
            for name in OUTPUTS:
                p = run_dir / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    atomic_write_text(owner, json.dumps({"config_hash": want, "config": container}, indent=1) + "\n")


@dataclass
class Teacher:
    """One model and the levels it generates; run.py starts at most one engine at a time."""
    name: str
    levels: tuple[str, ...]
    engine: Any
    model_id: str
    engine_id: dict
    seats: int = 0          # its model.max_num_seqs: how many requests vLLM runs at once


def _walk(cfg: Any, run_dir: Path, teachers: list[Teacher], replies: Replies, templates: Templates,
          progress=None, rounds: Optional[list] = None) -> tuple[Scheduler, int]:
    """Generate (or replay) the tree into run_dir's level files and dataset. With a second
    teacher (answers.model), its levels wait until the first teacher is done and stopped."""
    first = teachers[0]
    ctx = Context(cfg, first.name, teachers[-1].name)
    if cfg.taxonomy.file:
        roots = shard.select(taxonomy.select(taxonomy.load(cfg.taxonomy.file, cfg.taxonomy.infer_parents), ctx), cfg)
    else:
        roots = [taxonomy.root()]
    stop_after = "taxonomy" if cfg.taxonomy.review and not cfg.taxonomy.file else None
    sinks = Sinks(run_dir)
    level_ids = {lv: (t.model_id, t.engine_id) for t in teachers[1:] for lv in t.levels}
    sched = Scheduler(ctx, first.engine, replies, templates, first.model_id, first.engine_id,
                      sinks.write, sinks.failure, stop_after=stop_after, progress=progress,
                      level_ids=level_ids, deferred=frozenset(level_ids),
                      attempts_for=attempts_rule(cfg, roots if cfg.taxonomy.file else None),
                      rounds=Rounds(rounds) if rounds else None)
    sched.seats = first.seats or sched.seats
    # Disciplines read from a file are the taxonomy level's output as they stand.
    sinks.write("taxonomy", [taxonomy.record(r) for r in roots if r.level == "subjects"])
    try:
        sched.run(roots)
        for before, t in zip(teachers, teachers[1:]):
            _close(before.engine)      # its memory is the next teacher's
            sched.engine, sched.seats = t.engine, t.seats or sched.seats
            sched.deferred -= set(t.levels)
            sched.run([])
    finally:
        sinks.close()
    t = time.perf_counter()
    levels = levels_.enabled(cfg)
    finalize_levels(run_dir, levels)
    # The last level's records are the rows: answers, or the judge's (answers plus scores).
    rows = export_dataset(run_dir, levels[-1]) if stop_after is None else 0
    sched.timings["export"] += time.perf_counter() - t
    return sched, rows


def _close(engine: Any) -> None:
    if hasattr(engine, "close"):
        engine.close()


def teachers_of(cfg: Any, man: dict, engine: Any) -> list[Teacher]:
    """The teachers a finished run used, from its manifest, all answered by `engine`."""
    first = Teacher(cfg.model.name, (), engine, man["model_id"], man["engine_id"])
    if not man.get("answer_model_id"):
        return [first]
    return [first, Teacher(cfg.answers.model.name, tuple(levels_.teacher_levels(cfg)["answers.model"]), engine, man["answer_model_id"],
                           man["answer_engine_id"])]


def replay(cfg: Any, out_dir: Path, store_path: Path, teachers: list[Teacher], rounds: list) -> Scheduler:
    """Rebuild a run's outputs from its reply store alone (for verification)."""
    templates = Templates(cfg.prompts, cfg.language)
    replies = Replies(Store(store_path))
    try:
        sched, _ = _walk(cfg, out_dir, teachers, replies, templates, rounds=rounds)
    finally:
        replies.close()
    return sched


class _LazyEngine:
    """Starts vLLM at the first request not found in a store: a resumed run whose replies are
    all stored, or a teacher whose levels are all cached, loads no model. A started engine
    first passes the backend's self-check (engine.self_check), before any request of the tree."""

    def __init__(self, start: Callable[[], Any], say_start: Callable[[], None], backend: str):
        self._start, self._say, self.backend = start, say_start, backend
        self.engine: Any = None
        self.start_s = 0.0
        self.self_check_s = 0.0

    @property
    def version(self) -> str:
        return getattr(self.engine, "version", "")

    def submit(self, req) -> None:
        if self.engine is None:
            self._say()
            t = time.monotonic()
            engine = self._start()
            self.start_s = time.monotonic() - t
            try:
                self.self_check_s = self_check(engine, self.backend)
            except BaseException:
                _close(engine)
                raise
            for note in getattr(engine, "notes", []):
                _say(f"note: {note}")
            self.engine = engine
        self.engine.submit(req)

    def step(self) -> list:
        return self.engine.step() if self.engine is not None else []

    def abort(self, keys: list[str]) -> None:
        if self.engine is not None:
            self.engine.abort(keys)

    def close(self) -> None:
        if self.engine is not None:
            _close(self.engine)


def generate(cfg: Any, run_dir: Path, engine_factory: Optional[Callable[[Path], Any]] = None,
             rounds: Optional[list] = None) -> dict:
    """Run the whole pipeline into run_dir and return the summary. cfg is a GlanConfig.
    rounds: glan-local-regen's rounds, the new one last (None: those run_dir already has)."""
    t_start = time.monotonic()
    quiet(cfg.verbose)
    # Everything cheap is checked before the model loads.
    validate(cfg)
    if cfg.quality.enabled:
        from .quality.pipeline import preflight

        preflight(cfg.quality)
    templates = Templates(cfg.prompts, cfg.language)
    if cfg.taxonomy.file:
        kept = taxonomy.select(taxonomy.load(cfg.taxonomy.file, cfg.taxonomy.infer_parents), Context(cfg, ""))
        if not kept:
            raise ConfigError("taxonomy.include", f"no discipline of {cfg.taxonomy.file} is left by "
                              "taxonomy.include/exclude", "loosen the patterns")
        check_planned(cfg, shard.select(kept, cfg))   # shard.select refuses more shards than disciplines
    else:
        check_planned(cfg)
    _writable(run_dir)
    lock = _lock(run_dir)
    try:
        _check_stores(cfg, run_dir)
        return _generate(cfg, run_dir, engine_factory, templates, t_start, rounds)
    finally:
        lock.close()


def _generate(cfg: Any, run_dir: Path, engine_factory, templates: Templates, t_start: float,
              rounds: Optional[list]) -> dict:
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    backend = getattr(cfg.engine.backend, "value", cfg.engine.backend)
    # One teacher per config key, in the order they run; each level says which one answers it.
    specs = [(key, cfg.model if key == "model" else cfg.answers.model, tuple(lvs))
             for key, lvs in levels_.teacher_levels(cfg).items()]
    paths = [resolve_model_path(m, key) for key, m, _ in specs]
    longest = {}
    if engine_factory is None:
        for (key, _, _), path in zip(specs, paths):
            longest[key] = check_context(cfg, path, templates, key)
            problem = check_turn_end(path, strict=False)
            if problem:
                _say(f"warning: {problem}: replies may not stop where a turn ends (free-text answers then "
                     f"run to max_tokens); set eos_token_id in the folder's generation_config.json")
    _claim(run_dir, container, cfg.overwrite)
    if rounds is None:
        rounds = regen.load(run_dir).rounds
    else:   # before the walk: a killed round is resumed by the run's own command
        atomic_write_text(run_dir / regen.ROUNDS_FILE, json.dumps(rounds, indent=1) + "\n")
    _say(f"run directory: {run_dir}")

    def start(key: str, m: Any, path: Path) -> Callable[[], Any]:
        if engine_factory is not None:
            return lambda: engine_factory(path)
        from .engine import VllmEngine

        return lambda: VllmEngine(path, m, cfg.engine, longest.get(key), cfg.verbose)

    teachers, identities = [], []
    for (key, m, levels), path in zip(specs, paths):
        identity = model_identity(path)
        identities.append(identity)
        say = (lambda m=m, path=path, levels=levels: _say(
            f"starting the teacher {m.name} ({path}) with the {backend} backend for {', '.join(levels)}"))
        teachers.append(Teacher(m.name, levels, _LazyEngine(start(key, m, path), say, backend),
                                identity["identity"], engine_identity(m, backend), m.max_num_seqs))
    identity, model_id, engine_id = identities[0], teachers[0].model_id, teachers[0].engine_id

    cache = CacheDir(Path(cfg.cache_dir).expanduser()) if cfg.cache_dir else None
    replies = Replies(Store(run_dir / "store.sqlite"), cache)
    bars = Progress(_say)
    t_gen = time.monotonic()
    got = _stop_on_signals()
    try:
        sched, rows = _walk(cfg, run_dir, teachers, replies, templates, bars, rounds)
    except BaseException as e:
        # Ctrl-C also reaches vLLM's own processes, so the engine may fail first: any error
        # after a stop signal is the stop itself.
        if isinstance(e, KeyboardInterrupt) or got:
            n = replies.run.count()
            raise Interrupted(f"stopped by {got.get('signal', 'SIGINT')}: {n} replies are saved in "
                              f"{run_dir / 'store.sqlite'}; run the same command again to resume") from None
        raise
    finally:
        bars.close()
        replies.close()
        for t in teachers:
            t.engine.close()
    # Model loading happens inside the walk (at the first request to generate): not generation.
    engine_start_s = sum(t.engine.start_s for t in teachers)
    self_check_s = sum(t.engine.self_check_s for t in teachers)
    generation_s = time.monotonic() - t_gen - engine_start_s - self_check_s
    stats = sched.stats
    out_tokens = sum(s.output_tokens for s in stats.values())
    wasted = sum(s.wasted_output_tokens for s in stats.values())
    summary = {
        "run_dir": str(run_dir),
        "model": identity,
        **({"answer_model": identities[1]} if len(identities) > 1 else {}),
        "rows": rows,
        "language": cfg.language,
        "taxonomy": {"disciplines": _disciplines(run_dir),
                     "include": list(cfg.taxonomy.include), "exclude": list(cfg.taxonomy.exclude),
                     "dropped": sched.ctx.dropped},
        "levels": {name: s.as_dict() for name, s in stats.items() if name in levels_.enabled(cfg)},
        **({"regenerated": {"rounds": len(rounds), "asks": sum(s.redone for s in stats.values())}} if rounds else {}),
        "totals": {
            "planned": sum(s.planned for s in stats.values()),
            "failed": sum(s.failed for s in stats.values()),
            "generated": sum(s.attempts - s.from_store - s.from_cache for s in stats.values()),
            "from_store": sum(s.from_store for s in stats.values()),
            "from_cache": sum(s.from_cache for s in stats.values()),
            "output_tokens": out_tokens,
            "prompt_tokens": sum(s.prompt_tokens for s in stats.values()),
            "cached_prompt_tokens": sum(s.cached_prompt_tokens for s in stats.values()),
            "engine_start_s": round(engine_start_s, 1),
            # The structured-output backend's start-up check, per started teacher (engine.self_check).
            "self_check_s": round(self_check_s, 2),
            "generation_s": round(generation_s, 1),
            "output_tokens_per_s": round(out_tokens / generation_s, 1) if generation_s > 0 else 0.0,
            # Speculative retries that turned out unneeded: generated, then thrown away.
            "speculative": sum(s.speculative for s in stats.values()),
            "wasted": sum(s.wasted for s in stats.values()),
            "wasted_output_tokens": wasted,
            "useful_output_tokens_per_s": round((out_tokens - wasted) / generation_s, 1) if generation_s > 0 else 0.0,
            # The rest of generation_s is this process's own work between engine steps.
            "engine_step_s": round(sched.engine_s, 1),
            "mean_in_flight": round(sched.in_flight_sum / sched.steps, 1) if sched.steps else 0.0,
            # Step-weighted share of vLLM's seats (model.max_num_seqs) that held a request, and the
            # share of its step time with seats to spare (its own waiting queue empty).
            "occupancy": round(sched.seated_sum / sched.steps, 3) if sched.steps else 0.0,
            "queue_empty_share": round(sched.idle_s / sched.engine_s, 3) if sched.engine_s else 0.0,
            # Seconds of this process's own work, by part of the hot path, and of export.
            "hot_path_s": {k: round(v, 3) for k, v in sorted(sched.timings.items())},
            "wall_s": round(time.monotonic() - t_start, 1),
            # This process only (vLLM's engine core runs in its own): what the orchestration costs.
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    }
    failed = _verdict(cfg, sched, summary, backend, run_dir)
    if failed is not None:
        summary["error"] = str(failed)      # merge refuses such a run; the manifest still audits it
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(run_dir / "manifest.json", json.dumps({
        "glan_local": "glan-local run manifest v1",
        "config": container,
        "config_hash": manifest.config_hash(container),
        "seed": cfg.seed,
        "model": identity,
        "model_id": model_id,
        "engine_id": engine_id,
        **({"answer_model": identities[1], "answer_model_id": teachers[1].model_id,
            "answer_engine_id": teachers[1].engine_id} if len(teachers) > 1 else {}),
        "versions": manifest.versions(),
        "templates_sha256": templates.hashes(),
        "regenerated": rounds,      # glan-local-regen's rounds: what was asked again, with what
        # The files outside the run directory a replay needs, by content: verify works on a copy
        # of the run directory anywhere.
        "inputs": manifest.inputs(cfg),
        "schemas_sha256": sched.schema_hashes,
        "fingerprints": manifest.fingerprints(run_dir),
    }, indent=2) + "\n")
    if failed is not None:
        print(format_summary(summary), flush=True)
        raise failed
    if rows and cfg.quality.enabled and not (cfg.taxonomy.review and not cfg.taxonomy.file):
        from .quality.pipeline import run_quality

        # Last, so a failure here leaves a complete run (glan-local-quality can redo this step);
        # after summary.json is written, since the card and the report read this run's figures.
        out = Path(cfg.quality.out_dir).expanduser() if cfg.quality.out_dir else run_dir / "publish"
        summary["quality"] = run_quality(cfg.quality, out, run_dir=run_dir, seed=cfg.seed, say=_say)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary), flush=True)
    if cfg.taxonomy.review and not cfg.taxonomy.file:
        _say(f"taxonomy written to {run_dir / 'taxonomy.yaml'}: review and edit it, then run "
             f"glan-local taxonomy.file={run_dir / 'taxonomy.yaml'}")
    else:
        _say(f"dataset: {run_dir / 'data'} ({rows} rows); summary: {run_dir / 'summary.json'}")
    return summary


def _verdict(cfg: Any, sched: Scheduler, summary: dict, backend: str, run_dir: Path) -> Optional[Exception]:
    """Why a walk that ran to its end still failed, or None: a level whose every request failed,
    taxonomy.include/exclude that left no discipline, or no rows. Zero rows is never a success."""
    review = cfg.taxonomy.review and not cfg.taxonomy.file
    kept = f"the stored attempts are kept in {run_dir / 'store.sqlite'} and {run_dir / 'levels' / 'failures.jsonl'}"
    for level in (["taxonomy"] if review else levels_.enabled(cfg)):
        st = sched.stats[level]
        if st.planned and not st.ok:
            return CannotProduce(f"every request of the {level} level failed ({st.failed} of {st.planned}; last "
                                 f"reason: {st.last_reason}; backend {backend})", f"{_fix(cfg, level, st.last_reason, backend)}; {kept}")
    if sched.stats["taxonomy"].ok and sched.ctx.dropped and not summary["taxonomy"]["disciplines"]:
        key = "taxonomy.exclude" if cfg.taxonomy.exclude else "taxonomy.include"
        dropped = ", ".join(sched.ctx.dropped[:5]) + (", ..." if len(sched.ctx.dropped) > 5 else "")
        return ConfigError(key, f"taxonomy.include={list(cfg.taxonomy.include)} / taxonomy.exclude="
                           f"{list(cfg.taxonomy.exclude)} left no discipline of the generated taxonomy (dropped: {dropped})",
                           "loosen the patterns, or generate the taxonomy with taxonomy.review=true and pick from it")
    if not review and summary["rows"] == 0:
        empty = next((lv for lv in levels_.enabled(cfg) if not sched.stats[lv].items), levels_.enabled(cfg)[-1])
        return CannotProduce(f"the run produced 0 rows: the {empty} level saved nothing (backend {backend})",
                             f"see {run_dir / 'summary.json'}; {kept}")
    return None


def _disciplines(run_dir: Path) -> int:
    with open(run_dir / "levels" / "taxonomy.jsonl", encoding="utf-8") as f:
        return sum(1 for _ in f)


def _fix(cfg: Any, level: str, reason: str, backend: str) -> str:
    """What to try for a level that failed, by why its last request failed."""
    others = " or ".join(f"engine.backend={b}" for b in ("outlines", "xgrammar", "guidance") if b != backend)
    more = f"engine.max_attempts (now {cfg.engine.max_attempts}) for more tries"
    if reason.startswith("cut at max_tokens"):
        return (f"raise sampling.{level}.max_tokens (now {getattr(cfg.sampling, level).max_tokens}) or "
                f"{more}; a stronger teacher loops less")
    if reason.startswith("backend error"):
        return f"try {others}" + (", or raise engine.regex_timeout_s" if "timed out" in reason else "")
    return f"raise {more}, try {others}, or use a stronger teacher (model=...)"

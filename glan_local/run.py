"""The recipe: check everything cheap, start the teacher, walk the tree, export, summarise."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import OmegaConf

from . import identity, levels, logs, manifest, rundir, shard
from .atomic import write_json
from .config import ConfigError, validate
from .engine import Engine
from .export import Sinks, export_dataset, finalize_levels
from .levels import taxonomy
from .levels.base import Context
from .model import check_context, model_identity, resolve_model_path
from .plan import attempts_rule, check_planned
from .progress import Progress, quiet
from .prompts import Templates
from .scheduler import Scheduler
from .stop import Interrupted, stop_on_signals
from .store import CacheDir, Replies, Store
from .rounds import ROUNDS_FILE, Rounds, load as load_rounds
from .summary import build as build_summary, format_summary
from .teachers import Teacher, specs as teacher_specs, start as start_teachers
from .turn_end import check_turn_end
from .verdict import verdict

log = logging.getLogger(__name__)


def generate(cfg: Any, run_dir: Path, engine_factory: Optional[Callable[[Path], Engine]] = None,
             rounds: Optional[list] = None) -> dict:
    """Run the whole pipeline into run_dir and return the summary. cfg is a GlanConfig.
    rounds: glan-local-regen's rounds, the new one last (None: those run_dir already has)."""
    t_start = time.monotonic()
    quiet(cfg.verbose)
    logs.terminal()
    templates = _check(cfg, run_dir)
    lock = rundir.lock(run_dir)
    try:
        rundir.check_stores(cfg, run_dir)
        return _generate(cfg, run_dir, engine_factory, templates, t_start, rounds)
    finally:
        lock.close()


def _check(cfg: Any, run_dir: Path) -> Templates:
    """Everything cheap, before the model loads: values, the quality step's tools, templates,
    the taxonomy file and the size of the plan, a writable run directory."""
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
    rundir.writable(run_dir)
    return templates


@dataclass
class _Prepared:
    """What a run knows before it starts generating: its teachers' folders and identities,
    the context bound each engine is sized for, its rounds and its identity."""
    container: dict
    teachers: list          # (spec, folder, model_identity) per teacher
    longest: dict
    rounds: list
    regen: bool
    ident: identity.Identity


def _generate(cfg: Any, run_dir: Path, engine_factory, templates: Templates, t_start: float,
              rounds: Optional[list]) -> dict:
    p = _prepare(cfg, run_dir, engine_factory, templates, rounds)
    rundir.claim(run_dir, p.ident, p.container, cfg.overwrite, regen=p.regen)
    # The directory is this run's now (nothing before this point wrote in it): from here on,
    # glan.log gets every detail, and the terminal one line when something stops the run.
    handler = logs.attach(run_dir)
    try:
        return _run(cfg, run_dir, engine_factory, templates, t_start, p)
    except BaseException as e:
        log.debug("the run stopped: %s: %s", type(e).__name__, e, exc_info=True)
        raise
    finally:
        logs.detach(handler)


def _prepare(cfg: Any, run_dir: Path, engine_factory, templates: Templates, rounds: Optional[list]) -> _Prepared:
    """The teachers found and checked (their context, their end of turn), hashed, and the run's
    identity: all before anything in run_dir changes."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    specs = teacher_specs(cfg)
    paths = [resolve_model_path(m, key) for key, m, _ in specs]
    longest = {}
    if engine_factory is None:
        for (key, _, _), path in zip(specs, paths):
            longest[key] = check_context(cfg, path, templates, key)
            problem = check_turn_end(path, strict=False)
            if problem:
                log.info(f"warning: {problem}: replies may not stop where a turn ends (free-text answers then "
                         f"run to max_tokens); set eos_token_id in the folder's generation_config.json")
    models = [model_identity(path, log.info) for path in paths]
    regen = rounds is not None
    if rounds is None:
        rounds = load_rounds(run_dir).rounds
    ident = identity.of_run(container, {key: m["identity"] for (key, _, _), m in zip(specs, models)},
                            templates.used(levels.enabled(cfg)), _taxonomy_bytes(cfg), rounds)
    return _Prepared(container, list(zip(specs, paths, models)), longest, rounds, regen, ident)


def _run(cfg: Any, run_dir: Path, engine_factory, templates: Templates, t_start: float, p: _Prepared) -> dict:
    rounds = p.rounds
    if p.regen:   # before the walk: a killed round is resumed by the run's own command
        write_json(run_dir / ROUNDS_FILE, rounds, indent=1)
    log.info(f"run directory: {run_dir}")
    log.debug("run identity %s: %s", p.ident.digest, p.ident.as_dict())
    teachers = start_teachers(cfg, p.teachers, p.longest, engine_factory, log.info)

    cache = CacheDir(Path(cfg.cache_dir).expanduser()) if cfg.cache_dir else None
    replies = Replies(Store(run_dir / "store.sqlite"), cache)
    bars = Progress(log.info)
    t_gen = time.monotonic()
    got = stop_on_signals()
    try:
        sched, rows = walk(cfg, run_dir, teachers, replies, templates, bars, rounds)
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
    summary = build_summary(cfg, run_dir, sched, teachers, rows, rounds, t_start, t_gen)
    failed = verdict(cfg, sched, summary, run_dir)
    if failed is not None:
        summary["error"] = str(failed)      # merge refuses such a run; the manifest still audits it
    rundir.write_summary(run_dir, summary)
    rundir.write_manifest(run_dir, manifest.fields(cfg, p.ident, teachers, templates, rounds, sched.schema_hashes),
                          p.container)
    review = cfg.taxonomy.review and not cfg.taxonomy.file
    if failed is None and rows and cfg.quality.enabled and not review:
        rundir.quality_tail(cfg, run_dir, summary, log.info)
    print(format_summary(summary), flush=True)
    log.debug("summary: %s", summary)
    if failed is not None:
        raise failed
    if review:
        log.info(f"taxonomy written to {run_dir / 'taxonomy.yaml'}: review and edit it, then run "
                 f"glan-local taxonomy.file={run_dir / 'taxonomy.yaml'}")
    else:
        log.info(f"dataset: {run_dir / 'data'} ({rows} rows); summary: {run_dir / 'summary.json'}")
    return summary


def _taxonomy_bytes(cfg: Any) -> Optional[bytes]:
    return Path(cfg.taxonomy.file).expanduser().read_bytes() if cfg.taxonomy.file else None


def walk(cfg: Any, run_dir: Path, teachers: list[Teacher], replies: Replies, templates: Templates,
         progress=None, rounds: Optional[list] = None, replay: bool = False) -> tuple[Scheduler, int]:
    """Generate (or replay) the tree into run_dir's level files and dataset. With a second
    teacher (answers.model), its levels wait until the first teacher is done and stopped.
    replay: verify's walk, whose engine only says which replies the store lacks."""
    first = teachers[0]
    ctx = Context(cfg, first.name, teachers[-1].name)
    roots = taxonomy.select(taxonomy.load(cfg.taxonomy.file, cfg.taxonomy.infer_parents), ctx) \
        if cfg.taxonomy.file else [taxonomy.root()]
    placed = Rounds(rounds or [])
    placed.place(roots, cfg)     # every discipline, before shard.select: a merged run's rounds name shards
    roots = shard.select(roots, cfg)
    stop_after = "taxonomy" if cfg.taxonomy.review and not cfg.taxonomy.file else None
    sinks = Sinks(run_dir)
    level_ids = {lv: (t.model_id, t.engine_id) for t in teachers[1:] for lv in t.levels}
    sched = Scheduler(ctx, first.engine, replies, templates, first.model_id, first.engine_id,
                      sinks.write, sinks.failure, stop_after=stop_after, progress=progress,
                      level_ids=level_ids, deferred=frozenset(level_ids),
                      attempts_for=attempts_rule(cfg), rounds=placed if rounds else None)
    sched.seats = first.seats or sched.seats
    sched.replay = replay
    # Disciplines read from a file are the taxonomy level's output as they stand.
    sinks.write("taxonomy", [taxonomy.record(r) for r in roots if r.level == "subjects"])
    try:
        sched.run(roots)
        for before, t in zip(teachers, teachers[1:]):
            before.engine.close()      # its memory is the next teacher's
            sched.engine, sched.seats = t.engine, t.seats or sched.seats
            sched.deferred -= set(t.levels)
            sched.run([])
    finally:
        sinks.close()
    t = time.perf_counter()
    enabled = levels.enabled(cfg)
    finalize_levels(run_dir, enabled)
    # The last level's records are the rows: answers, or the judge's (answers plus scores).
    rows = export_dataset(run_dir, enabled[-1]) if stop_after is None else 0
    sched.timings["export"] += time.perf_counter() - t
    return sched, rows

"""The recipe: check everything cheap, start the teacher, walk the tree, export, summarise.

generate() is one run. A sweep's runs go through one engine (forest.py) with the same two
pieces: Run, a run directory from its checks to its summary, and Walk, one tree.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import identity, levels, logs, manifest, rundir, shard
from .atomic import atomic_write_text, write_json
from .config import ConfigError, GlanConfig, resolved
from .engine import Engine, check_extra, check_vllm, deterministic_mode
from .export import Sinks, export_dataset, finalize_levels
from .levels import taxonomy
from .levels.base import Context
from .model import check_context, model_identity, resolve_model_path
from .plan import attempts_rule, check_planned
from .progress import Progress, quiet
from .prompts import Templates
from .rounds import ROUNDS_FILE, Rounds
from .rounds import load as load_rounds
from .scheduler import Scheduler, Settings
from .stop import Interrupted, stop_on_signals
from .store import CacheDir, Replies, Store, teacher_identity
from .summary import build as build_summary
from .summary import format_summary
from .teachers import Teacher
from .teachers import specs as teacher_specs
from .teachers import start as start_teachers
from .turn_end import check_turn_end
from .verdict import verdict

log = logging.getLogger(__name__)


def generate(cfg: GlanConfig, run_dir: Path, engine_factory: Optional[Callable[[Path], Engine]] = None,
             rounds: Optional[list] = None, hydra_files: Optional[dict[str, str]] = None) -> dict:
    """Run the whole pipeline into run_dir and return the summary. cfg is a GlanConfig.
    engine_factory: the tests' FAKE engine (the teacher's folder is then not checked as a model).
    rounds: glan-local-regen's rounds, the new one last (None: those run_dir already has).
    hydra_files: the command's .hydra/ files (cli.hydra_files), written once the run is claimed."""
    run = Run(cfg, run_dir, rounds, check_model=engine_factory is None, hydra_files=hydra_files)
    try:
        teachers = run.teachers(engine_factory)
        bars = Progress(log.info)
        got = stop_on_signals()
        try:
            walk = run.walk(teachers, bars)
            walk.run()
            walk.finish()
        except BaseException as e:
            # Ctrl-C also reaches vLLM's own processes, so the engine may fail first: any error
            # after a stop signal is the stop itself.
            if isinstance(e, KeyboardInterrupt) or got:
                raise run.interrupted(got.get("signal", "SIGINT")) from None
            raise
        finally:
            bars.close()
            run.close_store()
            for t in teachers:
                t.engine.close()
        return run.finish(walk, teachers)
    except BaseException as e:
        run.failed(e)
        raise
    finally:
        run.close()


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


class Run:
    """A run directory from its checks to its summary: everything but the walk, which
    generate() drives alone and a Forest drives for many runs through one engine.

    Constructing it checks everything cheap, locks the directory, hashes the teachers and
    claims the directory for this run's identity (raising ConfigError, with nothing in the
    directory changed, when any of that fails); then it opens the run's glan.log. close() lets
    the directory go. job: a sweep job's label, which its log lines carry."""

    def __init__(self, cfg: GlanConfig, run_dir: Path, rounds: Optional[list] = None, job: Optional[str] = None,
                 check_model: bool = True, hydra_files: Optional[dict[str, str]] = None):
        self.cfg, self.run_dir, self.job = cfg, run_dir, job
        self.t_start = self.t_gen = time.monotonic()
        self.replies: Optional[Replies] = None
        self._handler: Optional[logging.Handler] = None
        quiet(cfg.verbose)
        logs.terminal()
        self.templates = _check(cfg, run_dir, check_model)
        self._lock = rundir.lock(run_dir)
        try:
            rundir.check_stores(cfg, run_dir)
            self.p = _prepare(cfg, run_dir, self.templates, rounds, check_model)
            rundir.claim(run_dir, self.p.ident, self.p.container, cfg.overwrite, regen=self.p.regen)
        except BaseException:
            self._lock.close()
            raise
        # The directory is this run's now (nothing before this point wrote in it): from here on,
        # glan.log gets every detail, and the terminal one line when something stops the run.
        self._handler = logs.attach(run_dir, job)
        for name, text in (hydra_files or {}).items():     # the command that made it, as Hydra writes it
            (run_dir / ".hydra").mkdir(exist_ok=True)
            atomic_write_text(run_dir / ".hydra" / name, text)
        if self.p.regen:   # before the walk: a killed round is resumed by the run's own command
            write_json(run_dir / ROUNDS_FILE, self.p.rounds, indent=1)
        log.info(f"run directory: {run_dir}")
        log.debug("run identity %s: %s", self.p.ident.digest, self.p.ident.as_dict())

    def teachers(self, engine_factory: Optional[Callable[[Path], Engine]] = None) -> list[Teacher]:
        """The run's teachers, each with an engine that starts at its first request to generate."""
        return start_teachers(self.cfg, self.p.teachers, self.p.longest, engine_factory, log.info)

    def walk(self, teachers: list[Teacher], progress: Optional[Callable] = None) -> Walk:
        cache = CacheDir(Path(self.cfg.cache_dir).expanduser()) if self.cfg.cache_dir else None
        self.replies = Replies(Store(self.run_dir / "store.sqlite"), cache)
        self.t_gen = time.monotonic()
        return Walk(self.cfg, self.run_dir, teachers, self.replies, self.templates, progress, self.p.rounds)

    @property
    def store(self) -> Replies:
        """The run's replies, once walk() opened them."""
        assert self.replies is not None, "the run's store is opened by walk()"
        return self.replies

    def interrupted(self, signal_name: str) -> Interrupted:
        n = self.replies.run.count() if self.replies is not None else 0
        return Interrupted(f"stopped by {signal_name}: {n} replies are saved in {self.run_dir / 'store.sqlite'}; "
                           "run the same command again to resume")

    def close_store(self) -> None:
        if self.replies is not None:
            self.replies.close()
            self.replies = None

    def finish(self, walk: Walk, teachers: list[Teacher]) -> dict:
        """The summary, the manifest and the quality step of a finished walk; raises when the
        run did not produce what was asked (verdict.py), after writing what it did."""
        cfg, run_dir, sched, rows = self.cfg, self.run_dir, walk.sched, walk.rows
        summary = build_summary(cfg, run_dir, sched, teachers, rows, self.p.rounds, self.t_start, self.t_gen)
        failed = verdict(cfg, sched, summary, run_dir)
        if failed is not None:
            summary["error"] = str(failed)      # merge refuses such a run; the manifest still audits it
        rundir.write_summary(run_dir, summary)
        rundir.write_manifest(run_dir, manifest.fields(cfg, self.p.ident, teachers, self.templates, self.p.rounds,
                                                       sched.schema_hashes), self.p.container)
        review = cfg.taxonomy.review and not cfg.taxonomy.file
        if failed is None and rows and cfg.quality.enabled and not review:
            rundir.quality_tail(cfg, run_dir, summary, log.info)
        if self.job is None:       # a sweep prints its own table
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

    def failed(self, e: BaseException) -> None:
        """The whole story of what stopped the run, in its glan.log (the terminal gets one line)."""
        log.debug("the run stopped: %s: %s", type(e).__name__, e, exc_info=e)

    def close(self) -> None:
        self.close_store()
        logs.detach(self._handler)
        self._handler = None
        self._lock.close()


def _check(cfg: GlanConfig, run_dir: Path, check_model: bool = True) -> Templates:
    """Everything cheap, before the model loads: values, the vLLM and its engine arguments,
    the quality step's tools, templates, the taxonomy file and the size of the plan, a writable
    run directory."""
    cfg.validate()
    if check_model:     # what vLLM would refuse once loading, refused now: its version, its arguments
        check_vllm()
        for key, m, _ in teacher_specs(cfg):
            check_extra(dict(m.extra or {}), f"{key}.extra")
        for note in deterministic_mode(cfg.engine):
            log.info(f"note: {note}")
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


def _prepare(cfg: GlanConfig, run_dir: Path, templates: Templates, rounds: Optional[list],
             check_model: bool) -> _Prepared:
    """The teachers found and checked (their context, their end of turn), hashed, and the run's
    identity: all before anything in run_dir changes."""
    container = resolved(cfg)
    specs = teacher_specs(cfg)
    paths = [resolve_model_path(m, key) for key, m, _ in specs]
    longest = {}
    if check_model:
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


def _taxonomy_bytes(cfg: GlanConfig) -> Optional[bytes]:
    return Path(cfg.taxonomy.file).expanduser().read_bytes() if cfg.taxonomy.file else None


class Walk:
    """One tree: its roots, level files and scheduler. run() generates (or replays) it with its
    own teachers' engines; a Forest drives its scheduler with others'. finish() writes the
    level files and the dataset. With a second teacher (answers.model), its levels wait until
    the first teacher is done and stopped."""

    def __init__(self, cfg: GlanConfig, run_dir: Path, teachers: list[Teacher], replies: Replies, templates: Templates,
                 progress: Optional[Callable] = None, rounds: Optional[list] = None, replay: bool = False):
        self.cfg, self.run_dir, self.teachers = cfg, run_dir, teachers
        first = teachers[0]
        ctx = Context(cfg, first.name, teachers[-1].name)
        roots = taxonomy.select(taxonomy.load(cfg.taxonomy.file, cfg.taxonomy.infer_parents), ctx) \
            if cfg.taxonomy.file else [taxonomy.root()]
        placed = Rounds(rounds or [])
        placed.place(roots, cfg)     # every discipline, before shard.select: a merged run's rounds name shards
        self.roots = shard.select(roots, cfg)
        self.stop_after = "taxonomy" if cfg.taxonomy.review and not cfg.taxonomy.file else None
        self.sinks = Sinks(run_dir)
        # Each level's teacher part of its request keys: the answer teacher's for its levels.
        keys = {lv: teacher_identity(first.model_id, first.engine_id) for lv in levels.NAMES}
        keys.update({lv: teacher_identity(t.model_id, t.engine_id) for t in teachers[1:] for lv in t.levels})
        self.sched = Scheduler(ctx, first.engine, replies, templates, keys, self.sinks,
                               Settings.of(cfg.engine, first.seats or cfg.model.max_num_seqs, replay),
                               stop_after=self.stop_after, progress=progress,
                               deferred=frozenset(lv for t in teachers[1:] for lv in t.levels),
                               attempts_for=attempts_rule(cfg), rounds=placed if rounds else None)
        self.rows = 0
        # Disciplines read from a file are the taxonomy level's output as they stand.
        self.sinks.write("taxonomy", [taxonomy.record(r) for r in self.roots if r.level == "subjects"])

    def run(self) -> None:
        try:
            self.sched.run(self.roots)
            for before, t in zip(self.teachers, self.teachers[1:]):
                before.engine.close()      # its memory is the next teacher's
                self.next_teacher(t)
                self.sched.run([])
        except BaseException:
            self.sinks.close()
            raise

    def next_teacher(self, t: Teacher, engine: Optional[Engine] = None) -> None:
        """Hand teacher t's deferred levels to the scheduler, with t's engine (or `engine`)."""
        self.sched.engine = engine or t.engine
        self.sched.settings = Settings.of(self.cfg.engine, t.seats or self.sched.settings.seats,
                                          self.sched.settings.replay)
        self.sched.deferred -= set(t.levels)

    def finish(self) -> int:
        """The level files in tree order and the dataset; returns the dataset's rows."""
        self.sinks.close()
        t = time.perf_counter()
        enabled = levels.enabled(self.cfg)
        finalize_levels(self.run_dir, enabled)
        # The last level's records are the rows: answers, or the judge's (answers plus scores).
        self.rows = export_dataset(self.run_dir, enabled[-1]) if self.stop_after is None else 0
        self.sched.timings["export"] += time.perf_counter() - t
        return self.rows


def walk(cfg: GlanConfig, run_dir: Path, teachers: list[Teacher], replies: Replies, templates: Templates,
         rounds: Optional[list] = None, replay: bool = False) -> tuple[Scheduler, int]:
    """One walk from start to end: verify's replay (replay=True: its engine only says which
    replies the store lacks)."""
    w = Walk(cfg, run_dir, teachers, replies, templates, None, rounds, replay)
    w.run()
    return w.sched, w.finish()

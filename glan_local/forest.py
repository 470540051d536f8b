"""Many trees, one engine: the jobs of a sweep walked together against one teacher.

Each job stays a whole run (run.Run: its own directory, lock, store, level files, summary,
manifest, glan.log); only the engine is shared. Jobs are grouped by teacher (the model's
content and every engine setting), and one group's engine runs at a time, since two large
teachers do not fit on one GPU. Within a group, one loop hands the engine requests from every
job, round-robin within the engine's room, and delivers each step's replies to their jobs.

Requests are keyed by content, so jobs that need the same reply share one request (Mux): the
engine gets it once, every job waiting for it gets its reply and stores it in its own store,
counted there as from_cache. A reply another job finished earlier is found in that job's store
(store.Replies' peers). A job whose walk fails stops alone; an engine that fails stops its group.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from . import logs
from .engine import Completion, Engine, Request
from .progress import Progress
from .run import Run, Walk
from .store import canonical
from .teachers import Teacher

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run of the forest: what the launcher knows of it, and what became of it."""
    label: str                       # "job 3", in its log lines and errors
    overrides: list[str]
    cfg: Optional[GlanConfig]        # None: its config did not validate (error says why)
    run_dir: Path
    run: Optional[Run] = None
    teachers: list[Teacher] = field(default_factory=list)
    walk: Optional[Walk] = None
    summary: Optional[dict] = None
    error: Optional[BaseException] = None

    @property
    def alive(self) -> bool:
        return self.error is None and self.walk is not None

    # Once opened (open_jobs) and walking (walk_group): what a job that is still alive always has.
    @property
    def runner(self) -> Run:
        assert self.run is not None, f"{self.label} was not opened"
        return self.run

    @property
    def walker(self) -> Walk:
        assert self.walk is not None, f"{self.label} is not walking"
        return self.walk

    @property
    def config(self) -> GlanConfig:
        assert self.cfg is not None, f"{self.label} has no valid config"
        return self.cfg


class Mux:
    """One engine behind many walks: every request key in the engine once, with the walks that
    wait for it, the first of them the one that asked."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.waiting: dict[str, list[int]] = {}

    @property
    def in_flight(self) -> int:
        return len(self.waiting)

    def client(self, j: int) -> MuxClient:
        return MuxClient(self, j)

    def submit(self, j: int, req: Request) -> None:
        who = self.waiting.get(req.key)
        if who is None:
            self.waiting[req.key] = [j]
            self.engine.submit(req)
        elif j not in who:
            who.append(j)

    def abort(self, j: int, keys: list[str]) -> None:
        gone = []
        for k in keys:
            who = self.waiting.get(k)
            if who is not None and j in who:
                who.remove(j)
                if not who:
                    del self.waiting[k]
                    gone.append(k)
        if gone:
            self.engine.abort(gone)

    def step(self) -> list[tuple[Completion, list[int]]]:
        return [(c, self.waiting.pop(c.key, [])) for c in self.engine.step()]


class MuxClient:
    """The engine one walk of a forest sees: its requests go to the shared engine; the forest,
    not the walk, steps it."""

    notes: list[str] = []

    def __init__(self, mux: Mux, j: int):
        self.mux, self.j = mux, j

    @property
    def version(self) -> str:
        return self.mux.engine.version

    def submit(self, req: Request) -> None:
        self.mux.submit(self.j, req)

    def abort(self, keys: list[str]) -> None:
        self.mux.abort(self.j, keys)

    def step(self) -> list[Completion]:
        raise RuntimeError("a forest's walk is stepped by the forest")

    def close(self) -> None:
        pass


@contextlib.contextmanager
def working_on(job: Job) -> Iterator[None]:
    """Log lines written meanwhile are this job's: its glan.log, its label on the terminal."""
    token = logs.job.set(job.label)
    try:
        yield
    finally:
        logs.job.reset(token)


def teacher_key(job: Job) -> str:
    """Jobs that can share an engine: the same teachers, by content, with the same engine
    settings (everything vllm.LLM is given, which the model and engine configs decide)."""
    def model(t: Teacher, m: Any) -> dict:
        settings = {k: v for k, v in vars(m).items() if k not in ("name", "path")}
        return {"model": t.model_id, "engine": t.engine_id, "settings": settings}

    cfg = job.config
    models = [cfg.model] + ([cfg.answers.model] if len(job.teachers) > 1 else [])
    return canonical({"teachers": [model(t, m) for t, m in zip(job.teachers, models)],
                      "backend": str(getattr(cfg.engine.backend, "value", cfg.engine.backend)),
                      "regex_timeout_s": cfg.engine.regex_timeout_s, "verbose": cfg.verbose})


def open_jobs(jobs: list[Job], engine_factory: Optional[Callable[[Path], Engine]] = None) -> None:
    """Every job's cheap checks, lock, identity and claim, before any engine starts; a job that
    fails them is refused alone (job.error). engine_factory: the tests' FAKE engine."""
    for job in jobs:
        with working_on(job):
            try:
                job.run = Run(job.config, job.run_dir, job=job.label, check_model=engine_factory is None)
                job.teachers = job.runner.teachers(engine_factory)
            except Exception as e:
                job.error = e
                if job.run is not None:
                    job.runner.close()
                    job.run = None


def groups(jobs: list[Job]) -> list[list[Job]]:
    """The opened jobs by teacher, in order of their first job."""
    out: dict[str, list[Job]] = {}
    for job in jobs:
        if job.run is not None:
            out.setdefault(teacher_key(job), []).append(job)
    return list(out.values())


def walk_group(group: list[Job], progress: Progress) -> None:
    """Walk every job of one group through one engine per teacher (the first job's), then
    finish each job: its level files, dataset, summary, manifest and quality step."""
    engines = [t.engine for t in group[0].teachers]
    try:
        for k, engine in enumerate(engines):
            mux = Mux(engine)
            for j, job in enumerate(group):
                if not job.alive and k > 0:
                    continue
                with working_on(job):
                    try:
                        if k == 0:
                            job.walk = job.runner.walk(job.teachers,
                                                       lambda lv, st, who=job.label: progress(lv, st, who))
                            job.walker.sched.engine = mux.client(j)
                            for root in job.walker.roots:
                                job.walker.sched.add(root)
                        else:
                            job.walker.next_teacher(job.teachers[k], mux.client(j))
                    except Exception as e:
                        _fail(job, e, mux, j)
            if k == 0:      # a reply one job has already is taken from its store by the others
                stores = {j: job.runner.store.run for j, job in enumerate(group) if job.alive}
                for j, job in enumerate(group):
                    if job.alive:
                        job.runner.store.peers = [s for i, s in stores.items() if i != j]
            _drive(group, mux)
            engine.close()      # its memory is the next teacher's
    finally:
        for engine in engines:
            engine.close()
    for job in group:
        if job.alive:
            with working_on(job):
                try:
                    job.walker.finish()
                    job.runner.close_store()
                    job.summary = job.runner.finish(job.walker, job.teachers)
                except Exception as e:
                    job.error = e
                    job.runner.failed(e)


def _fail(job: Job, e: BaseException, mux: Mux, j: int) -> None:
    """One job stops, alone: what it stored stays, its requests leave the engine."""
    job.error = e
    if job.walk is not None:
        mux.abort(j, job.walker.sched.abort_all())
        job.walker.sinks.close()
    job.runner.failed(e)
    job.runner.close_store()
    log.info(f"{job.label} stopped: {e}")


def _drive(group: list[Job], mux: Mux) -> None:
    """Until every job's walk is done (or left only levels of a later teacher): hand the engine
    requests from every job within its room, step it, deliver each reply to every job that
    waits for it."""
    alive = [(j, job) for j, job in enumerate(group) if job.alive]
    if not alive:
        return
    settings = alive[0][1].walker.sched.settings
    cap, spare_below = settings.max_in_flight, settings.speculate_below
    turn = 0
    while True:
        alive = [(j, job) for j, job in alive if job.alive]
        if not alive:
            return
        _pump(alive, mux, cap, spare_below, turn)
        turn += 1
        if not mux.in_flight:
            waits = []
            for j, job in alive:
                with working_on(job):
                    try:
                        if not job.walker.sched.in_flight:
                            waits.append(job.walker.sched.next_work())
                        else:
                            waits.append(0.0)
                    except Exception as e:
                        _fail(job, e, mux, j)
            pending = [w for w in waits if w is not None]
            if not pending:
                return
            time.sleep(min(pending))
            continue
        in_flight = mux.in_flight
        t = time.perf_counter()
        done = alive[0][1].walker.sched.engine_call(mux.step)      # a dead engine stops the group
        dt = time.perf_counter() - t
        routed: dict[int, list[Completion]] = {}
        shared: dict[int, set[str]] = {}
        for c, who in done:
            for n, j in enumerate(who):
                routed.setdefault(j, []).append(c)
                if n:
                    shared.setdefault(j, set()).add(c.key)
        for j, job in alive:
            sched = job.walker.sched
            sched.observe_step(in_flight, dt)       # the engine's view: every job reports it
            with working_on(job):
                try:
                    sched.deliver(routed.get(j, []), frozenset(shared.get(j, ())))
                except Exception as e:
                    _fail(job, e, mux, j)


def _pump(alive: list[tuple[int, Job]], mux: Mux, cap: int, spare_below: int, turn: int) -> None:
    """Fill the engine's room from every job in turn, a share each, until it is full or no job
    has more to hand it; speculative retries only while the whole engine has room for them."""
    order = alive[turn % len(alive):] + alive[:turn % len(alive)]
    while mux.in_flight < cap:
        room = cap - mux.in_flight
        share = max(1, room // len(order))
        spare = max(0, spare_below - mux.in_flight)
        taken = 0
        for j, job in order:
            if not job.alive:
                continue
            with working_on(job):
                try:
                    taken += job.walker.sched.pump(min(share, cap - mux.in_flight), min(spare, 1) if spare else 0)
                except Exception as e:
                    _fail(job, e, mux, j)
            if mux.in_flight >= cap:
                break
        if not taken:
            return


def _untagged(message: str) -> None:
    """A line about the whole forest (its progress): in no job's log, under no job's label."""
    token = logs.job.set(None)
    try:
        log.info(message)
    finally:
        logs.job.reset(token)


def run_forest(jobs: list[Job], engine_factory: Optional[Callable[[Path], Engine]] = None) -> None:
    """Open every job, then walk them group by group. What became of each is on the job."""
    open_jobs(jobs, engine_factory)
    progress = Progress(_untagged)
    try:
        for group in groups(jobs):
            try:
                walk_group(group, progress)
            except Exception as e:          # the group's engine failed: every job of it stops
                for job in group:
                    if job.error is None and job.summary is None:
                        job.error = e
                        job.runner.failed(e)
    finally:
        progress.close()
        for job in jobs:
            if job.run is not None:
                job.runner.close()

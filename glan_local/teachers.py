"""The teachers of a run: each model, the levels it answers, and its engine, started only when
the first request that no store holds needs it."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .engine import Completion, Engine, Request, engine_identity, self_check
from .levels import teacher_levels

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig


@dataclass
class Teacher:
    """One model and the levels it generates; a run starts at most one engine at a time."""
    name: str
    levels: tuple[str, ...]
    engine: Engine
    model_id: str
    engine_id: dict
    seats: int = 0          # its model.max_num_seqs: how many requests vLLM runs at once
    identity: dict = field(default_factory=dict)    # model.model_identity: what the model is, by content


class LazyEngine:
    """Starts vLLM at the first request not found in a store: a resumed run whose replies are
    all stored, or a teacher whose levels are all cached, loads no model. A started engine
    first passes the backend's self-check (engine.self_check), before any request of the tree."""

    def __init__(self, start: Callable[[], Engine], say_start: Callable[[], None], backend: str,
                 say: Callable[[str], None]):
        self._start, self._say_start, self._say, self.backend = start, say_start, say, backend
        self.engine: Optional[Engine] = None
        self.start_s = 0.0
        self.self_check_s = 0.0
        self.notes: list[str] = []

    @property
    def version(self) -> str:
        return self.engine.version if self.engine is not None else ""

    def submit(self, req: Request) -> None:
        if self.engine is None:
            self._say_start()
            t = time.monotonic()
            engine = self._start()
            self.start_s = time.monotonic() - t
            try:
                self.self_check_s = self_check(engine, self.backend)
            except BaseException:
                engine.close()
                raise
            for note in engine.notes:
                self._say(f"note: {note}")
            self.engine = engine
        self.engine.submit(req)

    def step(self) -> list[Completion]:
        return self.engine.step() if self.engine is not None else []

    def abort(self, keys: list[str]) -> None:
        if self.engine is not None:
            self.engine.abort(keys)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def specs(cfg: GlanConfig) -> list[tuple[str, Any, tuple[str, ...]]]:
    """(config key, model config, levels) per teacher, in the order they run: the question
    teacher, then the answer teacher when answers.model names one (its levels say which)."""
    levels = teacher_levels(cfg)
    return [(key, cfg.model if key == "model" else cfg.answers.model, tuple(lvs)) for key, lvs in levels.items()]


def start(cfg: GlanConfig, specs_paths: list, longest: dict, engine_factory: Optional[Callable[[Path], Engine]],
          say: Callable[[str], None]) -> list[Teacher]:
    """The run's teachers, each with an engine that starts when first needed. specs_paths:
    (spec, the model's folder, its model.model_identity) per teacher."""
    backend = getattr(cfg.engine.backend, "value", cfg.engine.backend)

    def starter(key: str, m: Any, path: Path) -> Callable[[], Engine]:
        if engine_factory is not None:
            return lambda: engine_factory(path)
        from .engine import VllmEngine

        return lambda: VllmEngine(path, m, cfg.engine, longest.get(key), cfg.verbose)

    teachers = []
    for (key, m, levels), path, identity in specs_paths:
        def say_start(m=m, path=path, levels=levels) -> None:
            say(f"starting the teacher {m.name} ({path}) with the {backend} backend for {', '.join(levels)}")
        teachers.append(Teacher(m.name, levels, LazyEngine(starter(key, m, path), say_start, backend, say),
                                identity["identity"], engine_identity(m, backend, cfg.engine.deterministic),
                                m.max_num_seqs, identity))
    return teachers


def of_manifest(cfg: GlanConfig, man: dict, engine: Engine) -> list[Teacher]:
    """The teachers a finished run used, from its manifest, all answered by `engine`."""
    first = Teacher(cfg.model.name, (), engine, man["model_id"], man["engine_id"])
    if not man.get("answer_model_id") or cfg.answers.model is None:
        return [first]
    return [first, Teacher(cfg.answers.model.name, tuple(teacher_levels(cfg)["answers.model"]), engine,
                           man["answer_model_id"], man["answer_engine_id"])]

"""The GLAN levels in pipeline order. A level is a module here and its prompt, prompts/<name>.j2;
the module holds every fact the rest of the program asks about it (see base.py): adding a level
is adding a module to ORDER and a template."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import answers, judge, questions, subjects, syllabus, taxonomy

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

ORDER = (taxonomy, subjects, syllabus, questions, answers, judge)
NAMES = tuple(m.name for m in ORDER)
BY_NAME = {m.name: m for m in ORDER}
INDEX = {m.name: i for i, m in enumerate(ORDER)}


def enabled(cfg: GlanConfig) -> list[str]:
    """The levels this run goes through; the last one's records are the dataset's rows."""
    return [m.name for m in ORDER if m.enabled(cfg)]


def teacher(cfg: GlanConfig, level: str) -> tuple[str, Any]:
    """(config key, model config) of the teacher that generates `level`: the answer teacher
    (answers.model) for the levels that say so, when one is set; else the question teacher."""
    if BY_NAME[level].TEACHER == "answers.model" and cfg.answers.model is not None:
        return "answers.model", cfg.answers.model
    return "model", cfg.model


def teacher_levels(cfg: GlanConfig) -> dict[str, list[str]]:
    """Config key of each teacher -> the enabled levels it generates, in the order they run."""
    out: dict[str, list[str]] = {}
    for lv in enabled(cfg):
        out.setdefault(teacher(cfg, lv)[0], []).append(lv)
    return out


def planned_per_discipline(cfg: GlanConfig) -> dict[str, int]:
    """Requests one discipline plans at each enabled level below the taxonomy, each level
    counting from the ones above it. Upper bounds: subjects merged away as duplicates, failed
    requests and syllabi with fewer concept combinations than asked for lower the real counts."""
    per: dict[str, int] = {}
    for m in ORDER[1:]:
        if m.enabled(cfg):
            per[m.name] = m.planned(cfg, per)
    return per


def saved(level: str, run_dir) -> None:
    """run_dir/levels/<level>.jsonl is final (a run's, or merged from shards): what the level
    writes from it besides (the taxonomy: the editable taxonomy.yaml). Optional per level;
    nothing for failures.jsonl, which no level owns."""
    hook = getattr(BY_NAME.get(level), "saved", None)
    if hook is not None:
        hook(run_dir)

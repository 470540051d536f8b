"""Level 4, homework questions: one per sampled concept combination, with the full syllabus."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel

from .base import Ask, Context, Node, Outcome, Text

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

name = "questions"
# The variables its template gets (besides `language`); checked when the run starts.
VARIABLES = frozenset({"discipline", "subject", "syllabus", "sessions", "concepts", "last_session"})
CONTEXT_FROM = ("syllabus",)   # earlier levels whose replies this level's prompt embeds
TEACHER = "model"
DEPTH = 5      # a discipline's path, a subject, a question


def enabled(cfg: GlanConfig) -> bool:
    return True


def planned(cfg: GlanConfig, per: dict[str, int]) -> int:
    return per["syllabus"] * cfg.breadth.questions_per_syllabus


class Question(BaseModel):
    question: Text


def asks(node: Node, ctx: Context) -> list[Ask]:
    d = node.data
    sessions = [{"number": i + 1, **{k: d["syllabus"]["sessions"][i][k] for k in ("title", "description")}}
                for i in d["session_indices"]]
    return [Ask({"discipline": d["discipline"], "subject": d["subject"], "syllabus": d["syllabus"],
                 "sessions": sessions, "concepts": d["key_concepts"],
                 "last_session": max(d["session_indices"]) + 1}, Question)]


def _row(node: Node, o: Outcome) -> dict:
    d = node.data
    return {"id": node.id, **{k: d[k] for k in ("field", "subfield", "discipline")},
            "subject": d["subject"]["name"], "subject_level": d["subject"]["level"],
            "strategy": d["strategy"], "session_indices": d["session_indices"],
            "session_titles": d["session_titles"], "key_concepts": d["key_concepts"],
            "question": o.value.question, "question_seed": o.seed, "question_request": o.key,
            "syllabus_request": d["syllabus_request"]}


def children(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[Node]:
    o = outcomes[0]
    if o is None:
        return []
    # The answer needs the question's provenance, not the syllabus: drop it so it can be freed.
    return [Node("answers", node.path, {**_row(node, o), "subject_obj": node.data["subject"]})]


def records(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    o = outcomes[0]
    return [_row(node, o)] if o is not None else []

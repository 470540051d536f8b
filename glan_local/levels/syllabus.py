"""Level 3, syllabus: one per subject, split into class sessions with key concepts.

Its children are the homework questions: concept combinations drawn here, per syllabus, with
a seed derived from the run seed and the syllabus's place in the tree.
"""
from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel, Field, create_model

from .. import sampling
from ..seeds import derive_seed
from .base import Ask, Context, Node, Outcome, Text, index_part

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

name = "syllabus"
# The variables its template gets (besides `language`); checked when the run starts.
VARIABLES = frozenset({"field", "subfield", "discipline", "subject", "sessions_min", "sessions_max", "concepts_max"})
CONTEXT_FROM = ("subjects",)   # earlier levels whose replies this level's prompt embeds
TEACHER = "model"
DEPTH = 4      # a discipline's path, then the subject


def enabled(cfg: GlanConfig) -> bool:
    return True


def planned(cfg: GlanConfig, per: dict[str, int]) -> int:
    """One per merged subject: at most max_subjects_per_discipline, and no more than were asked."""
    b = cfg.breadth
    return min(b.max_subjects_per_discipline, b.subject_queries * b.subjects_per_query)


@cache
def session_schema(concepts_max: int) -> type[BaseModel]:
    return create_model(f"Session{concepts_max}", title=(Text, ...), description=(Text, ...),
                        key_concepts=(list[Text], Field(min_length=1, max_length=concepts_max)))


@cache
def schema(sessions_min: int, sessions_max: int, concepts_max: int) -> type[BaseModel]:
    Session = session_schema(concepts_max)
    return create_model(
        f"Syllabus{sessions_min}_{sessions_max}_{concepts_max}",
        introduction=(Text, ...),
        objectives=(list[Text], Field(min_length=1, max_length=5)),
        outcomes=(list[Text], Field(min_length=1, max_length=5)),
        sessions=(list[Session], Field(min_length=sessions_min, max_length=sessions_max)),  # type: ignore[valid-type]
    )


def asks(node: Node, ctx: Context) -> list[Ask]:
    b = ctx.cfg.breadth
    return [Ask({**node.data, "sessions_min": b.sessions_min, "sessions_max": b.sessions_max,
                 "concepts_max": b.concepts_max}, schema(b.sessions_min, b.sessions_max, b.concepts_max))]


def children(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[Node]:
    o = outcomes[0]
    if o is None:
        return []
    syllabus = o.value.model_dump(mode="json")
    sessions = syllabus["sessions"]
    b = ctx.cfg.breadth
    combos = sampling.draw([len(s["key_concepts"]) for s in sessions], b.questions_per_syllabus,
                           b.two_session_fraction, derive_seed(ctx.cfg.seed, "combinations", node.id))
    shared = {**node.data, "syllabus": syllabus, "syllabus_request": o.key}
    out = []
    for q, (chosen, concepts) in enumerate(combos):
        out.append(Node("questions", node.path + (index_part(q),), {
            **shared,
            "strategy": "single-session" if len(chosen) == 1 else "two-session",
            "session_indices": list(chosen),
            "session_titles": [sessions[i]["title"] for i in chosen],
            "key_concepts": [sessions[s]["key_concepts"][c] for s, c in concepts],
        }))
    return out


def records(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    o = outcomes[0]
    if o is None:
        return []
    return [{"id": node.id, **{k: node.data[k] for k in ("field", "subfield", "discipline", "subject")},
             "syllabus": o.value.model_dump(mode="json"), "request": o.key}]

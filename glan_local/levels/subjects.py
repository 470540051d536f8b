"""Level 2, subjects: k independent subject lists per discipline, merged and de-duplicated.

Duplicates are judged by normalised name within a discipline only; the same subject under two
disciplines is kept twice, as in the paper (calculus in maths and in physics).
"""
from __future__ import annotations

import re
import unicodedata
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel, Field, create_model

from .base import Ask, Context, Node, Outcome, Text, name_part

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

name = "subjects"
# The variables its template gets (besides `language`); checked when the run starts.
VARIABLES = frozenset({"field", "subfield", "discipline", "count", "subtopics_max", "levels"})
CONTEXT_FROM: tuple = ()   # earlier levels whose replies this level's prompt embeds
TEACHER = "model"
DEPTH = 3      # a discipline's path: field, sub-field, discipline


def enabled(cfg: GlanConfig) -> bool:
    return True


def planned(cfg: GlanConfig, per: dict[str, int]) -> int:
    return cfg.breadth.subject_queries


class SubjectLevel(str, Enum):
    introductory = "introductory"
    intermediate = "intermediate"
    advanced = "advanced"


@cache
def subject_schema(subtopics_max: int) -> type[BaseModel]:
    return create_model(
        f"Subject{subtopics_max}",
        name=(Text, ...),
        level=(SubjectLevel, ...),
        introduction=(Text, ...),
        subtopics=(list[Text], Field(min_length=1, max_length=subtopics_max)),
    )


@cache
def schema(count: int, subtopics_max: int) -> type[BaseModel]:
    Subject = subject_schema(subtopics_max)
    return create_model(f"Subjects{count}_{subtopics_max}",
                        subjects=(list[Subject], Field(min_length=1, max_length=count)))  # type: ignore[valid-type]


def normalize(subject_name: str) -> str:
    text = unicodedata.normalize("NFKC", subject_name).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def merge(lists: list[list[dict]], cap: int) -> list[dict]:
    """Subjects in query order, first occurrence of each normalised name kept, at most `cap`."""
    seen: set[str] = set()
    out: list[dict] = []
    for q, items in enumerate(lists):
        for item in items:
            n = normalize(item["name"])
            if n and n not in seen:
                seen.add(n)
                out.append({**item, "query": q})
                if len(out) == cap:
                    return out
    return out


def asks(node: Node, ctx: Context) -> list[Ask]:
    b = ctx.cfg.breadth
    variables = {**node.data, "count": b.subjects_per_query, "subtopics_max": b.subtopics_max,
                 "levels": [lv.value for lv in SubjectLevel]}
    # Identical prompts; the k queries differ only by their derived seeds.
    return [Ask(variables, schema(b.subjects_per_query, b.subtopics_max)) for _ in range(b.subject_queries)]


def _merged(outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    lists = [[s.model_dump(mode="json") for s in o.value.subjects] if o else [] for o in outcomes]
    return merge(lists, ctx.cfg.breadth.max_subjects_per_discipline)


def children(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[Node]:
    # Merged names are distinct once normalised: each subject's id part is its name's.
    return [Node("syllabus", node.path + (name_part(normalize(s["name"])),), {**node.data, "subject": s})
            for s in _merged(outcomes, ctx)]


def records(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    return [{"id": c.id, **{k: c.data[k] for k in ("field", "subfield", "discipline")}, "subject": c.data["subject"]}
            for c in children(node, outcomes, ctx)]

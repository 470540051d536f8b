"""Level 6, judge (only with quality.judge.enabled): the teacher grades each question-answer pair.

Its records are the answers' rows plus the scores, so they become the dataset's rows; the
threshold (quality.judge.min_score) is applied by the quality step, which keeps what it drops
in quality/removed.jsonl. A pair the judge failed to grade keeps null scores, never vanishes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from pydantic import BaseModel

from .base import Ask, Context, Node, Outcome, Text

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

name = "judge"
# The variables its template gets (besides `language`); checked when the run starts.
VARIABLES = frozenset({"question", "answer", "discipline", "subject"})
CONTEXT_FROM = ("questions", "answers")   # earlier levels whose replies this level's prompt embeds
TEACHER = "answers.model"
DEPTH = 5      # one grade per answer, at the question's path
SCORES = ("clarity", "answerability", "correctness")


def enabled(cfg: GlanConfig) -> bool:
    return cfg.quality.judge.enabled


def planned(cfg: GlanConfig, per: dict[str, int]) -> int:
    return per["answers"]

Score = Literal[1, 2, 3, 4, 5]   # an enum in the JSON schema: every backend constrains it, unlike minimum/maximum


class Judgement(BaseModel):
    # The rationale comes first so the grades are decoded after the model has said why.
    rationale: Text
    clarity: Score
    answerability: Score
    correctness: Score


def asks(node: Node, ctx: Context) -> list[Ask]:
    row = node.data["row"]
    return [Ask({"question": row["question"], "answer": row["answer"], "discipline": row["discipline"],
                 "subject": row["subject"]}, Judgement)]


def children(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[Node]:
    return []


def records(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    o = outcomes[0]
    scores = {f"judge_{k}": getattr(o.value, k) if o else None for k in SCORES + ("rationale",)}
    return [{**node.data["row"], **scores, "judge_seed": o.seed if o else None,
             "judge_request": o.key if o else None}]

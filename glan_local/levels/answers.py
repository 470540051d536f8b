"""Level 5, answers: a separate pass over the questions, free text by default.

Its records are the dataset's rows: question, answer, full provenance and a chat `messages`
column ready for supervised fine-tuning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel

from .base import Ask, Context, Node, Outcome, Text, non_blank

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

name = "answers"
# The variables its template gets (besides `language`); checked when the run starts.
VARIABLES = frozenset({"question", "discipline", "subject", "structured"})
CONTEXT_FROM = ("questions",)   # earlier levels whose replies this level's prompt embeds
TEACHER = "answers.model"
DEPTH = 5      # one answer per question, at the question's path


def enabled(cfg: GlanConfig) -> bool:
    return True


def planned(cfg: GlanConfig, per: dict[str, int]) -> int:
    return per["questions"]


class Answer(BaseModel):
    answer: Text


def _language(value: str) -> dict:
    from ..language import resolve

    name, code = resolve(value)
    return {"language": name, "language_code": code or ""}


def asks(node: Node, ctx: Context) -> list[Ask]:
    d = node.data
    structured = ctx.cfg.answers.structured
    return [Ask({"question": d["question"], "discipline": d["discipline"], "subject": d["subject_obj"],
                 "structured": structured}, Answer if structured else None, text=non_blank)]


def children(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[Node]:
    # The optional judge grades the finished row, so it gets the row itself.
    if outcomes[0] is None or not ctx.cfg.quality.judge.enabled:
        return []
    return [Node("judge", node.path, {"row": _row(node, outcomes[0], ctx)})]


def records(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    o = outcomes[0]
    return [_row(node, o, ctx)] if o is not None else []


def _row(node: Node, o: Outcome, ctx: Context) -> dict:
    answer = o.value.answer if ctx.cfg.answers.structured else o.value
    row = {k: v for k, v in node.data.items() if k != "subject_obj"}
    return {**row, "answer": answer, "answer_seed": o.seed, "answer_request": o.key,
            "messages": [{"role": "user", "content": row["question"]},
                         {"role": "assistant", "content": answer}],
            "model": ctx.model_name, "answer_model": ctx.answer_model_name or ctx.model_name,
            **_language(ctx.cfg.language)}

"""Text normalisation and word n-grams shared by dedup, decontamination and diversity.

One definition of "the same words" everywhere: NFKC, casefolded, punctuation as spaces. So
"What is 2+2?" and "what is 2 + 2" are the same text, and counts agree across the report.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

_PUNCT = re.compile(r"[^\w\s]")


def flatten(value: Any) -> str:
    """A cell as text: lists (MMLU choices) and dicts (chat messages) are joined, None is empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(flatten(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return " ".join(flatten(v) for v in value)
    return str(value)


def words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT.sub(" ", text).split()


def normalize(text: str) -> str:
    return " ".join(words(text))


def ngrams(ws: list[str], n: int) -> list[str]:
    """Word n-grams; a text shorter than n words is its own single gram (never silently empty)."""
    if len(ws) <= n:
        return [" ".join(ws)] if ws else []
    return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def joined(row: dict, fields: Iterable[str]) -> str:
    return "\n".join(flatten(row.get(f)) for f in fields if row.get(f) is not None)

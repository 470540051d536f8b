"""What every level module provides, and the pieces they share.

A level turns a node into asks (template variables + reply schema), and the validated replies
of those asks into child nodes and into records for the level's saved file. The scheduler and
the engine know nothing of any particular level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Optional, Protocol

from pydantic import AfterValidator, BaseModel


def _non_blank(v: str) -> str:
    v = " ".join(v.split())
    if not v:
        raise ValueError("blank text")
    return v


# Constrained decoding cannot forbid blank strings cheaply (maxLength/minLength make outlines'
# index compile slowly), so they are caught here and the reply is retried.
Text = Annotated[str, AfterValidator(_non_blank)]


def node_id(path: tuple[int, ...]) -> str:
    """Fixed-width so that sorting ids as strings is sorting in tree order."""
    return ".".join(f"{i:05d}" for i in path) or "root"


@dataclass
class Node:
    level: str
    path: tuple[int, ...]
    data: dict = field(default_factory=dict)

    @cached_property
    def id(self) -> str:
        return node_id(self.path)


@dataclass
class Ask:
    variables: dict
    schema: Optional[type[BaseModel]]   # None: free text


@dataclass
class Outcome:
    """A validated reply, with what identifies it."""
    value: Any            # the pydantic object, or the text for free-text asks
    text: str
    key: str
    seed: int
    attempts: int


class Level(Protocol):
    name: str

    def asks(self, node: Node, ctx: "Context") -> list[Ask]: ...

    def children(self, node: Node, outcomes: list[Optional[Outcome]], ctx: "Context") -> list[Node]: ...

    def records(self, node: Node, outcomes: list[Optional[Outcome]], ctx: "Context") -> list[dict]: ...


@dataclass
class Context:
    cfg: Any           # the validated GlanConfig
    model_name: str
    answer_model_name: str = ""    # the answer teacher's, when answers.model names another
    dropped: list = field(default_factory=list)   # taxonomy nodes left out by include/exclude


def provenance(data: dict, *keys: str) -> dict:
    return {k: data[k] for k in keys}

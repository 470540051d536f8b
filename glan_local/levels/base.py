"""What every level module provides, and the pieces they share.

A level is a module in levels/ (listed in levels.ORDER) with its prompt prompts/<name>.j2. It
turns a node into asks (template variables + reply schema, or how a free-text reply is read),
and the validated replies of those asks into child nodes and into records for the level's
saved file. Besides, each module states:

- name, VARIABLES (its template's, checked at start), CONTEXT_FROM (earlier levels whose
  replies its prompt embeds);
- TEACHER: "model", or "answers.model" for levels the answer teacher generates when set;
- DEPTH: len(node.path) of its nodes; enabled(cfg); planned(cfg, per): requests one
  discipline plans at this level, given `per`, the counts of the levels above it;
- optionally saved(run_dir): what it writes once its levels/<name>.jsonl is final.

The scheduler, the planner and the engine know nothing of any particular level.
"""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig


def non_blank(v: str) -> str:
    """Text with its whitespace runs made single; a blank text is invalid (the reply is retried)."""
    v = " ".join(v.split())
    if not v:
        raise ValueError("blank text")
    return v


# Constrained decoding cannot forbid blank strings cheaply (maxLength/minLength make outlines'
# index compile slowly), so they are caught here and the reply is retried.
Text = Annotated[str, AfterValidator(non_blank)]


def normal_name(name: str) -> str:
    """A name as compared for sameness: Unicode-normalised, case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def name_part(name: str) -> str:
    """A node's part of its id, from its name: the same name gives the same part wherever its
    siblings are. Ids (and so seeds and request keys) follow names, never positions: pruning
    or adding a discipline in a reviewed taxonomy leaves every other node's requests as they were."""
    return hashlib.blake2b(normal_name(name).encode(), digest_size=5).hexdigest()


def index_part(i: int) -> str:
    """The part of a node numbered within its parent's reply (a syllabus's questions)."""
    return f"{i:05d}"


def node_id(path: tuple[str, ...]) -> str:
    """Parts joined by dots: sorting ids as strings keeps every subtree together."""
    return ".".join(path) or "root"


@dataclass
class Node:
    level: str
    path: tuple[str, ...]      # name_part / index_part from the root down
    data: dict = field(default_factory=dict)

    @cached_property
    def id(self) -> str:
        return node_id(self.path)


@dataclass
class Ask:
    variables: dict
    schema: Optional[type[BaseModel]]   # None: free text, read by `text`
    # A free-text reply's value; raises ValueError (the reason) when the reply is invalid.
    text: Callable[[str], Any] = non_blank


@dataclass
class Outcome:
    """A validated reply, with what identifies it."""
    value: Any            # the pydantic object, or the text for free-text asks
    text: str
    key: str
    seed: int
    attempts: int


@dataclass
class Context:
    cfg: GlanConfig           # the validated GlanConfig
    model_name: str
    answer_model_name: str = ""    # the answer teacher's, when answers.model names another
    dropped: list = field(default_factory=list)   # taxonomy nodes left out by include/exclude


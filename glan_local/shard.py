"""Sharding a run across nodes: each shard takes some of the taxonomy's disciplines.

Disciplines are assigned after the taxonomy is known (read from `taxonomy.file`, the same file
for every shard), deterministically and balanced by planned request count: greedy
longest-processing-time first (largest discipline first, ties in tree order), each to the
least-loaded shard (ties: the lowest shard index). A discipline keeps its place in the whole
taxonomy (node ids, paths and seeds are global), so the rows of all shards, merged and sorted
(`glan-local-merge`), are the rows of the unsharded run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError
from .levels import planned_per_discipline
from .levels.base import Node

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig


def _one_discipline(node: Node) -> bool:
    """A discipline node, or a node asking the teacher for one discipline's parents (a flat list)."""
    return node.level == "subjects" or (node.level == "taxonomy" and node.data.get("depth") == "classify")


def weight(node: Node, cfg: GlanConfig) -> int:
    """Planned requests of one root node (a discipline) and everything under it."""
    return (node.level == "taxonomy") + sum(planned_per_discipline(cfg).values())


def assign(weights: list[int], count: int) -> list[int]:
    """Shard index of each item: LPT greedy, deterministic (ties broken by item order, then shard)."""
    loads = [0] * count
    out = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        s = min(range(count), key=lambda s: (loads[s], s))
        out[i] = s
        loads[s] += weights[i]
    return out


def assignment(roots: list[Node], count: int, cfg: GlanConfig) -> dict[str, int]:
    """Shard index of each root (by its id) for `count` shards; the same whatever order the
    roots come in: it depends on the taxonomy only."""
    ordered = sorted(roots, key=lambda r: r.path)
    return {r.id: s for r, s in zip(ordered, assign([weight(r, cfg) for r in ordered], count))}


def select(roots: list[Node], cfg: GlanConfig) -> list[Node]:
    """This shard's root nodes. With shard.count=1, all of them, whatever they are."""
    index, count = cfg.shard.index, cfg.shard.count
    if count == 1:
        return roots
    if not all(_one_discipline(r) for r in roots):
        raise ConfigError("shard.count", "sharding needs the disciplines of a taxonomy file",
                          "generate the taxonomy once with taxonomy.review=true, then pass "
                          "taxonomy.file=<run>/taxonomy.yaml to every shard")
    if count > len(roots):
        raise ConfigError("shard.count", f"{count} shards for the {len(roots)} disciplines of taxonomy.file "
                          "leave some shards empty", f"use shard.count={max(len(roots), 1)} or fewer")
    shard_of = assignment(roots, count, cfg)
    return sorted((r for r in roots if shard_of[r.id] == index), key=lambda r: r.path)

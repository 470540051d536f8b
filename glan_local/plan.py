"""How many requests a run plans, from its breadth and taxonomy alone, and the bound on it.

The count is an upper bound (every subject distinct, no failure, no retry), the same one the
shards are balanced by (levels.planned_per_discipline). A run above engine.max_planned_requests
is refused before the model loads: the default, 100M, is five times breadth=paper (~20M
requests, the paper's ~10M pairs), so it stops a typo such as breadth.fields=100000, which
would otherwise build huge schemas and queues, never a run someone planned.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from . import levels
from .errors import ConfigError
from .levels import taxonomy
from .levels.base import Node

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig


def planned_requests(cfg: GlanConfig, roots: Optional[list[Node]] = None) -> tuple[int, int, int, str]:
    """(requests, disciplines, requests per discipline, where the disciplines come from).
    roots: this run's root nodes from taxonomy.file (after include/exclude and shard), or None
    for a generated taxonomy."""
    groups, disciplines, source = taxonomy.plan(cfg, roots)
    if roots is None and cfg.taxonomy.review:      # stops after the taxonomy
        return sum(groups.values()), disciplines, 0, source
    per = sum(levels.planned_per_discipline(cfg).values())
    return sum(groups.values()) + disciplines * per, disciplines, per, source


def check_planned(cfg: GlanConfig, roots: Optional[list[Node]] = None) -> int:
    n, disciplines, per, source = planned_requests(cfg, roots)
    cap = cfg.engine.max_planned_requests
    if n > cap:
        raise ConfigError("breadth", f"this run plans up to {n:,} requests ({disciplines:,} disciplines from {source}, "
                          f"up to {per:,} requests each), above engine.max_planned_requests={cap:,}",
                          "lower the breadth (e.g. breadth.fields, breadth.questions_per_syllabus), or raise "
                          "engine.max_planned_requests if you mean it")
    return n


def asks_per_group(cfg: GlanConfig) -> dict[tuple[str, int], int]:
    """Planned asks per (level, depth in the tree) that decide one subtree together: each depth
    of a generated taxonomy (the root is one ask alone), and below it one discipline's asks of
    each level (a flat list's parents ask: one per discipline). Never the number of disciplines,
    so that pruning one from a reviewed taxonomy changes no other discipline's attempts."""
    b = cfg.breadth
    groups = {(taxonomy.name, 0): 1, (taxonomy.name, 1): b.fields,
              (taxonomy.name, 2): b.fields * b.subfields_per_field, (taxonomy.name, 3): 1}
    for level, n in levels.planned_per_discipline(cfg).items():
        groups[(level, levels.BY_NAME[level].DEPTH)] = n
    return groups


def attempts_rule(cfg: GlanConfig):
    """Attempts per ask: engine.max_attempts, raised for a group of few asks so that the group
    as a whole gets at least engine.min_level_attempts tries: max(max_attempts,
    ceil(min_level_attempts / asks in the group)). A group whose every ask fails loses all that
    hangs below it (the taxonomy root is one ask: the whole run; a discipline's subject lists:
    the discipline), so with a teacher that fails one attempt in two, 12 tries leave a 1-in-4096
    chance where 4 left 1 in 16."""
    e = cfg.engine
    groups = asks_per_group(cfg)

    def attempts_for(node: Node) -> int:
        n = groups.get((node.level, len(node.path)), 1)
        return max(e.max_attempts, -(-e.min_level_attempts // max(n, 1)))

    return attempts_for

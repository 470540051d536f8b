"""glan-local-regen's rounds as every walk applies them: which asks of a run directory are asked
again, and with what (regen.py makes a round; RUN_DIR/regenerated.json keeps them all)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .config import SamplingConfig
from .errors import ConfigError

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig

ROUNDS_FILE = "regenerated.json"
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "repetition_penalty")


@dataclass
class Redo:
    """How one ask is asked again: its round (the seed salt), sampling and attempts, and why."""
    round: int
    sampling: SamplingConfig
    max_attempts: int
    why: str = "level"


def why(r: dict) -> str:
    """What a round asked again for, in a word: judge (scores below a threshold), language
    (rows the language check removed), quality (rows removed for another reason), failures
    (failed requests), level (every request of a level), or mixed."""
    sel = r.get("selected") or {}
    kinds = set()
    if sel.get("judge_below") is not None:
        kinds.add("judge")
    if sel.get("removed"):
        kinds.add("language" if set(sel["removed"]) == {"wrong-language"} else "quality")
    if sel.get("reasons"):
        kinds.add("failures")
    if sel.get("whole_levels"):
        kinds.add("level")
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "level")


def scope(r: dict) -> Optional[tuple[int, int]]:
    """(shard index, shard count) of the run a round was made in; None: an unsharded run's."""
    s = r.get("scope")
    return (int(s["index"]), int(s["count"])) if s else None


@dataclass
class Rounds:
    """Every round of a run directory, the latest round winning for an ask they share.

    A round made in a shard (its `scope`) applies to that shard's disciplines only: in the shard
    itself, and in the run merged from the shards (glan-local-merge carries every shard's
    rounds), where place() says which discipline belongs to which shard."""
    rounds: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self._asks: dict[tuple, list[int]] = {}
        self._levels: dict[str, list[int]] = {}
        for i, r in enumerate(self.rounds):
            for level in r["selected"].get("whole_levels", []):
                self._levels.setdefault(level, []).append(i)
            for level, node, ask in r["asks"]:
                self._asks.setdefault((level, node, ask), []).append(i)
        self._own: Optional[tuple[int, int]] = None
        self._shard_of: dict[int, dict[str, int]] = {}    # shard count -> discipline id -> index

    def place(self, roots: list, cfg: GlanConfig) -> None:
        """The run's disciplines (walk's roots) and its own shard, for rounds made in shards."""
        from .shard import assignment

        self._own = (cfg.shard.index, cfg.shard.count) if cfg.shard.count > 1 else None
        for count in {c for c in (scope(r) for r in self.rounds) if c} - {self._own}:
            if self._own is None and count[1] <= len(roots):
                self._shard_of[count[1]] = assignment(roots, count[1], cfg)

    def _applies(self, i: int, node: str) -> bool:
        s = scope(self.rounds[i])
        if s is None or s == self._own:
            return True
        if self._own is not None:
            return False         # another shard's round, in a shard: never (merge refuses such dirs)
        discipline = ".".join(node.split(".")[:3])
        return self._shard_of.get(s[1], {}).get(discipline) == s[0]

    def redo(self, cfg: GlanConfig, level: str, node: str, ask: int) -> Optional[Redo]:
        found = [i for i in self._asks.get((level, node, ask), []) + self._levels.get(level, [])
                 if self._applies(i, node)]
        if not found:
            return None
        r = self.rounds[max(found, key=lambda i: (self.rounds[i]["round"], i))]
        base = getattr(cfg.sampling, level)
        changed = r["settings"].get("sampling", {}).get(level, {})
        sampling = SamplingConfig(**{k: changed.get(k, getattr(base, k)) for k in SAMPLING_KEYS})
        return Redo(r["round"], sampling, r["settings"].get("max_attempts") or cfg.engine.max_attempts, why(r))


def load(run_dir: Path) -> Rounds:
    p = run_dir / ROUNDS_FILE
    if not p.exists():
        return Rounds([])
    try:
        return Rounds(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError("out_dir", f"'{p}' is not the list of rounds glan-local-regen wrote ({type(e).__name__})",
                          "restore it from the manifest's 'regenerated' entry, or remove it to drop every "
                          "round") from None

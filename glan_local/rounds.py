"""glan-local-regen's rounds as every walk applies them: which asks of a run directory are asked
again, and with what (regen.py makes a round; RUN_DIR/regenerated.json keeps them all)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import SamplingConfig

ROUNDS_FILE = "regenerated.json"
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "repetition_penalty")


@dataclass
class Redo:
    """How one ask is asked again: its round (the seed salt), sampling and attempts."""
    round: int
    sampling: SamplingConfig
    max_attempts: int


@dataclass
class Rounds:
    """Every round of a run directory, later rounds winning for an ask they share."""
    rounds: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self._asks: dict[tuple, int] = {}
        self._levels: dict[str, int] = {}
        for i, r in enumerate(self.rounds):
            for level in r["selected"].get("whole_levels", []):
                self._levels[level] = i
            for level, node, ask in r["asks"]:
                self._asks[(level, node, ask)] = i

    def redo(self, cfg: Any, level: str, node: str, ask: int) -> Optional[Redo]:
        i = max(self._asks.get((level, node, ask), -1), self._levels.get(level, -1))
        if i < 0:
            return None
        r = self.rounds[i]
        base = getattr(cfg.sampling, level)
        changed = r["settings"].get("sampling", {}).get(level, {})
        sampling = SamplingConfig(**{k: changed.get(k, getattr(base, k)) for k in SAMPLING_KEYS})
        return Redo(r["round"], sampling, r["settings"].get("max_attempts") or cfg.engine.max_attempts)


def load(run_dir: Path) -> Rounds:
    p = run_dir / ROUNDS_FILE
    return Rounds(json.loads(p.read_text()) if p.exists() else [])

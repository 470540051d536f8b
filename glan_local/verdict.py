"""Whether a walk that ran to its end produced what was asked: zero rows is never a success."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from . import levels
from .config import Backend
from .errors import CannotProduce, ConfigError

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig


def verdict(cfg: GlanConfig, sched: Any, summary: dict, run_dir: Path) -> Optional[Exception]:
    """Why the run failed, or None: a level whose every request failed, taxonomy.include/exclude
    that left no discipline, or no rows."""
    backend = getattr(cfg.engine.backend, "value", cfg.engine.backend)
    review = cfg.taxonomy.review and not cfg.taxonomy.file
    enabled = levels.enabled(cfg)
    kept = f"the stored attempts are kept in {run_dir / 'store.sqlite'} and {run_dir / 'levels' / 'failures.jsonl'}"
    for level in (["taxonomy"] if review else enabled):
        st = sched.stats[level]
        if st.planned and not st.ok:
            return CannotProduce(f"every request of the {level} level failed ({st.failed} of {st.planned}; last "
                                 f"reason: {st.last_reason}; backend {backend})",
                                 f"{_fix(cfg, level, st.last_reason, backend)}; {kept}")
    if sched.stats["taxonomy"].ok and sched.ctx.dropped and not summary["taxonomy"]["disciplines"]:
        key = "taxonomy.exclude" if cfg.taxonomy.exclude else "taxonomy.include"
        dropped = ", ".join(sched.ctx.dropped[:5]) + (", ..." if len(sched.ctx.dropped) > 5 else "")
        return ConfigError(key, f"taxonomy.include={list(cfg.taxonomy.include)} / taxonomy.exclude="
                           f"{list(cfg.taxonomy.exclude)} left no discipline of the generated taxonomy "
                           f"(dropped: {dropped})",
                           "loosen the patterns, or generate the taxonomy with taxonomy.review=true and pick from it")
    if not review and summary["rows"] == 0:
        empty = next((lv for lv in enabled if not sched.stats[lv].items), enabled[-1])
        return CannotProduce(f"the run produced 0 rows: the {empty} level saved nothing (backend {backend})",
                             f"see {run_dir / 'summary.json'}; {kept}")
    return None


def _fix(cfg: GlanConfig, level: str, reason: str, backend: str) -> str:
    """What to try for a level that failed, by why its last request failed."""
    others = Backend.others(backend)
    more = f"engine.max_attempts (now {cfg.engine.max_attempts}) for more tries"
    if reason.startswith("cut at max_tokens"):
        return (f"raise sampling.{level}.max_tokens (now {getattr(cfg.sampling, level).max_tokens}) or "
                f"{more}; a stronger teacher loops less")
    if reason.startswith("backend error"):
        return f"try {others}" + (", or raise engine.regex_timeout_s" if "timed out" in reason else "")
    return f"raise {more}, try {others}, or use a stronger teacher (model=...)"

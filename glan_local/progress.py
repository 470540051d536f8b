"""What a person sees while a run goes: quiet libraries, and progress per level.

By default vLLM logs errors only, and the warnings, C++ notices and progress bars of vLLM,
torch and datasets are off; `verbose=true` shows all of it. With a terminal attached, one live
bar per level; without one (CI, Slurm logs), one plain line every 10 s at most.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings

from tqdm import tqdm

LINE_EVERY_S = 10.0
# The environment quiet() sets (a variable the user exported wins). Its engine processes inherit
# it, so it must be in place before vLLM is imported. PYTHONWARNINGS: the FutureWarnings of
# vLLM's imports, in every process.
VERBOSE_ENV = {"VLLM_LOGGING_LEVEL": "INFO", "TORCH_CPP_LOG_LEVEL": "INFO", "TOKENIZERS_PARALLELISM": "false"}
QUIET_ENV = {"VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false",
             "PYTHONWARNINGS": "ignore", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
QUIET_VARS = tuple(QUIET_ENV)   # for whoever must undo it (the tests run many configs in one process)


def quiet(verbose: bool) -> None:
    for k, v in (VERBOSE_ENV if verbose else QUIET_ENV).items():
        os.environ.setdefault(k, v)
    if verbose:
        return
    # vLLM configures its logging when the engine starts; what its modules log at import before
    # that (a note that Triton has no CPU backend) would reach Python's last-resort handler.
    logging.getLogger("vllm").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


class Progress:
    """Called with (level, LevelStats) whenever an ask of that level settles; a sweep's forest
    passes each job's label too, and the figures shown are summed over its jobs."""

    def __init__(self, say=None, tty: bool | None = None):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.say = say or (lambda msg: print(f"[glan-local] {msg}", file=sys.stderr, flush=True))
        self.bars: dict[str, tqdm] = {}
        self.stats: dict = {}                 # (job, level) -> LevelStats
        self.t0 = time.monotonic()
        self.last = self.t0

    def __call__(self, level: str, st, job: str | None = None) -> None:
        self.stats[(job, level)] = st
        if self.tty:
            self._bar(level)
        elif time.monotonic() - self.last >= LINE_EVERY_S:
            self.line()

    def _totals(self) -> dict[str, list[int]]:
        """level -> [settled, planned, failed, retries], summed over jobs, in the order first seen."""
        out: dict[str, list[int]] = {}
        for (_, level), st in self.stats.items():
            t = out.setdefault(level, [0, 0, 0, 0])
            for k, v in enumerate((st.ok + st.failed, st.planned, st.failed, st.retries)):
                t[k] += v
        return out

    def _bar(self, level: str) -> None:
        done, planned, failed, retries = self._totals()[level]
        if level not in self.bars:
            self.bars[level] = tqdm(desc=f"{level:<9}", total=planned, position=len(self.bars), unit="req",
                                    leave=True, dynamic_ncols=True, file=sys.stderr)
        bar = self.bars[level]
        bar.total = planned
        bar.n = done
        bar.set_postfix_str(f"failed={failed} retries={retries}", refresh=False)
        bar.refresh()

    def line(self) -> None:
        """One plain line: every level's settled / planned requests so far."""
        self.last = time.monotonic()
        jobs = {job for job, _ in self.stats if job is not None}
        parts = [f"{lv} {done}/{planned}" + (f" ({failed} failed)" if failed else "")
                 for lv, (done, planned, failed, _) in self._totals().items()]
        who = f" ({len(jobs)} jobs)" if jobs else ""
        self.say(f"progress at {self.last - self.t0:.0f} s{who}: " + ", ".join(parts))

    def close(self) -> None:
        for b in self.bars.values():
            b.close()

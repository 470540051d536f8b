"""What a person sees while a run goes: quiet libraries, and progress per level.

By default vLLM logs errors only, and the warnings, C++ notices and progress bars of vLLM,
torch and datasets are off; `verbose=true` shows all of it. With a terminal attached, one live
bar per level; without one (CI, Slurm logs), one plain line every 10 s at most.
"""
from __future__ import annotations

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
    warnings.simplefilter("ignore")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


class Progress:
    """Called with (level, LevelStats) whenever an ask of that level settles."""

    def __init__(self, say=None, tty: bool | None = None):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.say = say or (lambda msg: print(f"[glan-local] {msg}", file=sys.stderr, flush=True))
        self.bars: dict[str, tqdm] = {}
        self.stats: dict = {}
        self.t0 = time.monotonic()
        self.last = self.t0

    def __call__(self, level: str, st) -> None:
        self.stats[level] = st
        if self.tty:
            self._bar(level, st)
        elif time.monotonic() - self.last >= LINE_EVERY_S:
            self.line()

    def _bar(self, level: str, st) -> None:
        if level not in self.bars:
            self.bars[level] = tqdm(desc=f"{level:<9}", total=st.planned, position=len(self.bars), unit="req",
                                    leave=True, dynamic_ncols=True, file=sys.stderr)
        bar = self.bars[level]
        bar.total = st.planned
        bar.n = st.ok + st.failed
        bar.set_postfix_str(f"failed={st.failed} retries={st.retries}", refresh=False)
        bar.refresh()

    def line(self) -> None:
        """One plain line: every level's settled / planned requests so far."""
        self.last = time.monotonic()
        parts = [f"{lv} {st.ok + st.failed}/{st.planned}" + (f" ({st.failed} failed)" if st.failed else "")
                 for lv, st in self.stats.items()]
        self.say(f"progress at {self.last - self.t0:.0f} s: " + ", ".join(parts))

    def close(self) -> None:
        for b in self.bars.values():
            b.close()

"""glan-local's one logger: short lines on the terminal, every detail in the run's glan.log.

The terminal gets INFO and above as `[glan-local] message` (the command's own name for merge,
quality and regen), written to whatever sys.stderr is at that moment. A run directory gets
`glan.log` (run.generate attaches it once the directory is locked): DEBUG detail with times and
full tracebacks, so that a one-line error on the terminal can end with where the rest is.
Commands that only read (verify, --cfg) never attach a file.
"""
from __future__ import annotations

import contextvars
import logging
import sys
from pathlib import Path
from typing import Optional

LOG_FILE = "glan.log"
log = logging.getLogger("glan_local")     # every module's logger (__name__) is a child of it
_prefix = ["glan-local"]
_opened: set[Path] = set()      # the glan.log files this process wrote to
# The sweep job whose work is being done now (forest.py), None outside one: its lines go to its
# own glan.log only, and say whose they are on the terminal.
job: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("glan_job", default=None)


class _Terminal(logging.Handler):
    """sys.stderr as it is when a record is emitted (pytest and sweep jobs replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            who = job.get()
            print(f"[{_prefix[0]}] {f'{who}: ' if who else ''}{record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:   # a closed terminal must not stop a run
            self.handleError(record)


def terminal(prefix: str = "glan-local") -> logging.Logger:
    """Set up the terminal handler once per process; `prefix` names the command in each line."""
    _prefix[0] = prefix
    if not any(isinstance(h, _Terminal) for h in log.handlers):
        handler = _Terminal(logging.INFO)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False    # Hydra's or a user's root configuration must not print it twice
    return log


def attach(run_dir: Path, of_job: Optional[str] = None) -> logging.Handler:
    """Append this process's records, DEBUG and up, to run_dir/glan.log until detach(). of_job:
    a sweep job's run directory gets that job's records and those of no job (the shared engine)."""
    terminal(_prefix[0])
    handler = logging.FileHandler(run_dir / LOG_FILE, mode="a", encoding="utf-8", delay=False)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if of_job is not None:
        handler.addFilter(lambda record: job.get() in (None, of_job))
    log.addHandler(handler)
    _opened.add((run_dir / LOG_FILE).absolute())
    return handler


def detach(handler: Optional[logging.Handler]) -> None:
    if handler is not None:
        log.removeHandler(handler)
        handler.close()


def details(run_dir: Optional[str | Path]) -> str:
    """' (details: <run>/glan.log)' when this process wrote there, for the end of a one-line error."""
    if run_dir is None:
        return ""
    p = Path(run_dir) / LOG_FILE
    return f" (details: {p})" if p.absolute() in _opened and p.is_file() else ""

"""A clean stop: Ctrl-C, a scheduler's SIGTERM and Slurm's SIGUSR2 before the time limit all stop
a run between replies, with every reply finished so far stored; the same command resumes it."""
from __future__ import annotations

import signal


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGUSR2: stopped between replies, everything finished so far is stored."""


def stop_on_signals() -> dict:
    """SIGTERM (a scheduler's kill) and SIGUSR2 (Slurm's warning before the time limit, see
    hydra.launcher.signal_delay_s) behave like Ctrl-C: stop, keep what is stored."""
    got: dict = {}

    def handler(signum, frame):
        if got:         # already stopping: Slurm signals every process of a job, and a sweep
            return      # parent passes its signal on too, so the same stop may arrive twice
        got["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, handler)
    return got

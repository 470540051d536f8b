"""The two ways a run stops on purpose, each one line naming the culprit and the fix."""
from __future__ import annotations


class ConfigError(Exception):
    """A bad configuration value: one line naming the key and the fix. Exit code 2."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(f"config error: {key}: {problem.rstrip('.')}. Fix: {fix}")
        self.key = key


class CannotProduce(Exception):
    """The run cannot produce what was asked (a teacher or backend that fails, a level that
    produced nothing): one line naming the culprit and what to try. Exit code 3."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"error: {problem.rstrip('.')}. Fix: {fix}")


class EngineFailed(CannotProduce):
    """The engine itself failed (it died, or failed one request past engine.error_retries): the
    run stops with everything stored so far, and the same command resumes it. Exit code 3."""

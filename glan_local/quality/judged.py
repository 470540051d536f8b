"""The judge's threshold: rows graded by the judge level keep their scores as columns; a pair
below quality.judge.min_score on any criterion, or that the judge failed to grade, is removed
(to quality/removed.jsonl, with its scores, so a threshold can be revisited without a rerun)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from ..levels.judge import SCORES

COLUMNS = tuple(f"judge_{k}" for k in SCORES)


def has_scores(rows: Iterable[dict]) -> bool:
    return any(COLUMNS[0] in r for r in rows)


class Threshold:
    """One row at a time; counts every graded row's scores, kept or not (the report shows what
    the threshold cut)."""
    name = "judge"
    adds = None          # no column of its own

    def __init__(self, min_score: int):
        self.min_score = min_score
        self.dist = {c: {str(k): 0 for k in range(1, 6)} for c in COLUMNS}
        self.graded = self.below = self.unscored = 0

    def check(self, r: dict) -> tuple[dict, Optional[dict]]:
        """(the row; None if it is kept, else its removal record)."""
        scores = [r.get(c) for c in COLUMNS]
        for c, s in zip(COLUMNS, scores):
            for k in range(1, 6):
                self.dist[c][str(k)] += s == k
        self.graded += scores[0] is not None
        if any(s is None for s in scores):
            self.unscored += 1
            return r, {"reason": "judge-unscored", "row": r}
        graded = [int(s) for s in scores if s is not None]
        if min(graded) < self.min_score:
            self.below += 1
            return r, {"reason": "judge-below-threshold", "detail": [c for c, s in zip(COLUMNS, graded)
                                                                    if s < self.min_score], "row": r}
        return r, None

    def figures(self) -> dict:
        return {"min_score": self.min_score, "graded": self.graded, "scores": self.dist,
                "below_threshold": self.below, "unscored": self.unscored}

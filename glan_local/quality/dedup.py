"""Exact and near-duplicate removal, within the dataset and against earlier datasets.

Exact: the normalised text (text.normalize) of the compared columns. Near: MinHash over word
shingles (datasketch), candidates from LSH banding with datasketch's band sizes, then checked
against the estimated Jaccard, since LSH buckets let through pairs below the threshold. The
first occurrence is kept, so the result does not depend on anything but row order, which is
tree order for a run.

Rows go through in chunks; what stays is only what a later row is compared with, per indexed
row: an 8-byte digest of its text, its id, its MinHash values (num_perm x 4 bytes) and one
12-byte entry per band in sorted arrays. About 0.9 KB a row at num_perm=128, where
datasketch's MinHash objects and LSH buckets took ~8 KB.
"""
from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

import numpy as np

from .rows import chunks
from .text import joined, ngrams, normalize, words

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import DedupConfig

THIS = "this dataset"
CHUNK = 2000
_BLOCK = 4096     # MinHash rows per allocated block: the store grows without copying
# Odd multipliers that fold a band's values into one 64-bit key. Two different bands colliding
# only adds a candidate, which the Jaccard check then rejects.
_MULT = np.random.default_rng(20240213).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)
_SALT = np.uint64(0x9E3779B97F4A7C15)


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


class Deduper:
    """cfg is a DedupConfig. index_earlier() the earlier datasets, then check() chunks of rows
    in order: each chunk's kept rows are indexed before the next chunk."""
    name = "dedup"

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.counts = {"exact": 0, "near": 0, "exact_earlier": 0, "near_earlier": 0}
        self.seen: dict[int, int] = {}           # digest of normalised text -> handle
        self.ids: list[str] = []                 # handle -> row id
        self.place = array("H")                  # handle -> index into places
        self.pos = array("q")                    # handle -> row number in its source (tie-break)
        self.places: list[tuple[str, str]] = []  # (where, LSH key tag) as datasketch keys were named
        self.blocks: list[np.ndarray] = []
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []   # sorted band keys, their handles
        self.n_this = 0
        if cfg.near:
            from datasketch import MinHashLSH

            # Weighted towards recall: every candidate is checked against the estimated Jaccard, so
            # a false positive costs one comparison, while a false negative is a duplicate kept.
            # With equal weights a pair right at the threshold is found less than half the time.
            lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9))
            self.b, self.r = lsh.b, lsh.r

    # --- what a chunk needs -----------------------------------------------------------------
    def _prepare(self, rows: list[dict]):
        texts = [joined(r, self.cfg.fields) for r in rows]
        keys = [normalize(t) for t in texts]
        if not self.cfg.near:
            return keys, None, None
        from datasketch import MinHash

        shingles = [[g.encode("utf-8") for g in ngrams(words(t), self.cfg.shingle_size)] for t in texts]
        sig = np.stack([m.hashvalues for m in MinHash.bulk(shingles, num_perm=self.cfg.num_perm)]).astype(np.uint32)
        m, b, r = len(rows), self.b, self.r
        bands = (sig[:, : b * r].reshape(m, b, r).astype(np.uint64) * _MULT[:r]).sum(axis=2)
        return keys, sig, bands ^ (np.arange(b, dtype=np.uint64) * _SALT)

    def _sig(self, h: int) -> np.ndarray:
        return self.blocks[h // _BLOCK][h % _BLOCK]

    def _add(self, digest: int, rid: str, place: int, pos: int) -> int:
        h = len(self.ids)
        self.seen[digest] = h
        self.ids.append(rid)
        self.place.append(place)
        self.pos.append(pos)
        return h

    def _store(self, handles: list[int], sig: np.ndarray, bands: np.ndarray) -> None:
        """A chunk's indexed rows (consecutive handles): their MinHash values, and their band
        keys as one more sorted run; runs of similar size are merged, so there are O(log n)."""
        if not handles:
            return
        for h, row in zip(handles, sig):
            if h % _BLOCK == 0:
                self.blocks.append(np.empty((_BLOCK, sig.shape[1]), dtype=np.uint32))
            self.blocks[-1][h % _BLOCK] = row
        self.runs.append((bands.reshape(-1), np.repeat(np.asarray(handles, dtype=np.int32), self.b)))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, h1), (k2, h2) = self.runs.pop(), self.runs.pop()
            self.runs.append((np.concatenate([k2, k1]), np.concatenate([h2, h1])))
        keys, hs = self.runs[-1]          # the only run not sorted yet
        order = np.argsort(keys, kind="stable")
        self.runs[-1] = (keys[order], hs[order])

    def _candidates(self, bands: np.ndarray) -> list[set]:
        """Per row of a chunk: the handles indexed before the chunk that share a band with it."""
        out: list[set] = [set() for _ in range(len(bands))]
        q = bands.reshape(-1)
        order = np.argsort(q)            # sorted needles: searchsorted walks the run once
        q = q[order]
        for keys, handles in self.runs:
            lo, hi = np.searchsorted(keys, q, "left"), np.searchsorted(keys, q, "right")
            for j in np.nonzero(hi > lo)[0].tolist():
                out[int(order[j]) // self.b].update(handles[lo[j]:hi[j]].tolist())
        return out

    def _within(self, bands: np.ndarray) -> dict[int, set]:
        """Per row of a chunk: the earlier rows of the same chunk that share a band with it."""
        flat = bands.reshape(-1)
        order = np.argsort(flat, kind="stable")
        same = np.nonzero(flat[order][1:] == flat[order][:-1])[0].tolist()
        out: dict[int, set] = {}
        group: list[int] = []
        for k, i in enumerate(same):
            group = group if k and same[k - 1] == i - 1 else [int(order[i]) // self.b]
            group.append(int(order[i + 1]) // self.b)
            for j in group:
                out.setdefault(j, set()).update(x for x in group if x < j)
        return out

    # --- the two uses ---------------------------------------------------------------------
    def index_earlier(self, where: str, rows: Iterable[dict]) -> None:
        """Rows of an earlier dataset: never removed, only matched."""
        place = len(self.places)
        self.places.append((where, f"e{place}"))
        i = 0
        for chunk in chunks(rows, CHUNK):
            keys, sig, bands = self._prepare(chunk)
            added, js = [], []
            for j, (r, key) in enumerate(zip(chunk, keys)):
                if key and (d := _digest(key)) not in self.seen:
                    added.append(self._add(d, str(r.get("id", i + j)), place, i + j))
                    js.append(j)
            if sig is not None:
                self._store(added, sig[js], bands[js])
            i += len(chunk)

    def check(self, rows: list[dict]) -> list[Optional[dict]]:
        """Per row, in order: None if kept (and indexed), else its removal record."""
        if not rows:
            return []
        if not self.places or self.places[-1][0] != THIS:
            self.places.append((THIS, "r"))
        place = len(self.places) - 1
        keys, sig, bands = self._prepare(rows)
        near = sig is not None
        before: list[set] = self._candidates(bands) if near else []
        within: dict[int, set] = self._within(bands) if near else {}
        mine: dict[int, int] = {}        # row of this chunk -> its handle, once indexed
        out: list[Optional[dict]] = []
        for j, (r, key) in enumerate(zip(rows, keys)):
            hit = None
            d = _digest(key) if key else None
            if d is not None and d in self.seen:
                hit = ("exact-duplicate", self.seen[d], 1.0)
            elif d is not None and near:
                cands = [(h, self._sig(h)) for h in before[j]]
                cands += [(mine[x], sig[x]) for x in within.get(j, ()) if x in mine]
                if cands:
                    same = np.count_nonzero(np.stack([s for _, s in cands]) == sig[j], axis=1).tolist()
                    # The highest estimate wins; ties as datasketch's keys "<tag>:<row>" compared as text.
                    best = max((n / self.cfg.num_perm, f"{self.places[self.place[h]][1]}:{self.pos[h]}", h)
                               for n, (h, _) in zip(same, cands))
                    if best[0] >= self.cfg.threshold:
                        hit = ("near-duplicate", best[2], round(best[0], 3))
            if hit:
                reason, h, sim = hit
                where = self.places[self.place[h]][0]
                kind = "exact" if reason == "exact-duplicate" else "near"
                self.counts[kind + ("" if where == THIS else "_earlier")] += 1
                out.append({"reason": reason, "duplicate_of": self.ids[h], "duplicate_in": where, "similarity": sim,
                            "row": r})
                continue
            out.append(None)
            if d is not None:
                i = self.n_this + j
                mine[j] = self._add(d, str(r.get("id", i)), place, i)
        if near:
            js = list(mine)
            self._store([mine[j] for j in js], sig[js], bands[js])
        self.n_this += len(rows)
        return out

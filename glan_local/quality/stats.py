"""What the card and the report say about the published rows, gathered one row at a time:
counts per branch, lengths, and a few rows and questions drawn by position. Nothing here grows
with the row count but the per-row lengths (two small ints a row)."""
from __future__ import annotations

import random
from array import array
from collections import Counter
from typing import Optional

from .text import words

# distinct-n over this many questions at most (a seeded sample beyond it): the measure falls
# as a corpus grows, so a fixed-size sample also compares datasets of different sizes fairly.
DISTINCT_SAMPLE = 10_000


class Published:
    def __init__(self, n: int, seed: int = 0, embed_sample: int = 2000, samples: int = 5):
        """n: the rows that will be added, in published order (train, then held out)."""
        self.n = 0
        step = max(1, n // samples)
        self.sample_at: dict[int, Optional[dict]] = {i: None for i in range(0, n, step)[:samples]}
        # The draws random.sample() makes over the questions themselves, made over positions.
        self.distinct_at = None if n <= DISTINCT_SAMPLE else set(random.Random(seed).sample(range(n), DISTINCT_SAMPLE))
        self.embed_order = list(range(n)) if n <= embed_sample else random.Random(seed).sample(range(n), embed_sample)
        self.embed_at = set(self.embed_order) if n > embed_sample else None
        self.texts: dict[int, str] = {}
        self.models: set[str] = set()
        self.languages: set[str] = set()
        self.language_codes: set[str] = set()
        self.per_disc: Counter = Counter()         # (field, subfield, discipline) -> rows
        self.subjects: set[tuple] = set()          # (field, subfield, discipline, subject)
        self.fields: Counter = Counter()
        self.disciplines: Counter = Counter()
        self.has_discipline = self.has_strategy = self.has_concepts = False
        self.strategy: Counter = Counter()
        self.q_len, self.a_len, self.concepts = array("I"), array("I"), array("I")

    def add(self, r: dict, i: int) -> None:
        """A published row and its place in published order (rows come in source order)."""
        self.n += 1
        if i in self.sample_at:
            self.sample_at[i] = r
        q = str(r.get("question", ""))
        if self.distinct_at is None or i in self.distinct_at or self.embed_at is None or i in self.embed_at:
            self.texts[i] = q
        if r.get("model"):
            self.models.add(str(r["model"]))
        if r.get("language"):
            self.languages.add(str(r["language"]))
        if r.get("language_code"):
            self.language_codes.add(str(r["language_code"]))
        branch = (r.get("field"), r.get("subfield"), r.get("discipline"))
        self.per_disc[branch] += 1
        self.subjects.add((*branch, r.get("subject")))
        self.fields[str(r.get("field"))] += 1
        self.disciplines[str(r.get("discipline"))] += 1
        self.has_discipline |= bool(r.get("discipline"))
        self.q_len.append(len(words(str(r.get("question") or ""))))
        if r.get("answer") is not None:
            self.a_len.append(len(words(str(r.get("answer") or ""))))
        self.strategy[str(r.get("strategy"))] += 1
        self.has_strategy |= bool(r.get("strategy"))
        self.concepts.append(len(r.get("key_concepts") or []))
        self.has_concepts |= bool(r.get("key_concepts"))

    def samples(self) -> list[dict]:
        return [r for r in self.sample_at.values() if r is not None]

    def distinct_texts(self) -> list[str]:
        return [t for i, t in sorted(self.texts.items()) if self.distinct_at is None or i in self.distinct_at]

    def embed_texts(self) -> list[str]:
        return [self.texts[i] for i in self.embed_order if i in self.texts]

    def subjects_per_discipline(self, full: bool) -> Counter:
        """Distinct subjects per (field, subfield, discipline), or per discipline name."""
        if full:
            return Counter(s[:3] for s in self.subjects)
        return Counter(str(d) for d, _ in {(s[2], s[3]) for s in self.subjects})


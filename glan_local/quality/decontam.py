"""Benchmark decontamination by word n-gram overlap.

Why n = 8 by default, and measured on the benchmark's side: GPT-3's 13-grams were made for web
documents; a homework question is often 15-40 words, so a copied benchmark question with a
changed number or an added sentence leaves few or no 13-word runs intact, and MMLU-style
questions are often shorter than 13 words altogether. 8 words verbatim (PaLM's choice) is still
rare by chance in natural text. One shared 8-gram is not enough, though: template phrases ("which
of the following statements best describes the") recur across benchmarks and our questions. So a
hit needs `min_overlap` (default 0.5) of a benchmark item's 8-grams to appear in our text: a
benchmark question pasted into a longer generated one is caught, a shared stock phrase is not.
Benchmark texts shorter than n words are their own single gram, so they match only a text of
ours that is the same after normalisation (a 5-word item would otherwise match everywhere).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .rows import detect_fields, load_rows
from .text import flatten, joined, ngrams, words

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import DecontamConfig

# An n-gram shared by more benchmark texts than this is template text, not content: it would
# only slow the count down, and on its own it can never reach min_overlap of a real item.
_COMMON = 200


@dataclass
class Benchmark:
    name: str
    source: str
    fields: list[str]
    items: int
    units: list[tuple[int, str, int]] = field(default_factory=list)   # (item, field, n-gram count)
    index: dict[int, list[int]] = field(default_factory=dict)          # hash(n-gram) -> unit numbers


def load_benchmark(source: str, name: str, fields: list[str], n: int) -> Benchmark:
    rows = load_rows(source)
    fields = detect_fields(rows, fields or None)
    b = Benchmark(name, source, fields, len(rows))
    index: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        for f in fields:
            grams = set(ngrams(words(flatten(r.get(f))), n))
            if not grams:
                continue
            u = len(b.units)
            b.units.append((i, f, len(grams)))
            for g in grams:
                index[hash(g)].append(u)
    b.index = {g: us for g, us in index.items() if len(us) <= _COMMON}
    return b


def benchmark_names(sources: list[str]) -> list[str]:
    names: list[str] = []
    for s in sources:
        base = s[4:] if s.startswith("hub:") else (Path(s).stem or Path(s).name)
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def hits(text: str, b: Benchmark, n: int, min_overlap: float) -> list[dict]:
    counts: Counter = Counter()
    for g in set(ngrams(words(text), n)):
        for u in b.index.get(hash(g), ()):
            counts[u] += 1
    out = []
    for u, c in counts.items():
        item, fld, total = b.units[u]
        if c / total >= min_overlap:
            out.append({"benchmark": b.name, "item": item, "field": fld, "overlap": round(c / total, 3)})
    return sorted(out, key=lambda h: -h["overlap"])


class Decontaminator:
    """cfg is a DecontamConfig. One row at a time; mode=flag keeps every row and fills a
    `contamination` column."""
    name = "decontam"

    def __init__(self, cfg: DecontamConfig, say=None):
        self.cfg, self.mode = cfg, getattr(cfg.mode, "value", cfg.mode)
        self.adds = "contamination" if self.mode == "flag" else None
        self.per: dict[str, dict] = {}
        self.benches = []
        for src, name in zip(cfg.benchmarks, benchmark_names(list(cfg.benchmarks))):
            b = load_benchmark(src, name, list(cfg.benchmark_fields), cfg.ngram)
            self.benches.append(b)
            self.per[name] = {"source": src, "fields": b.fields, "items": b.items, "hits": 0}
            if say:
                say(f"decontamination: {name}: {b.items} items, fields {b.fields}")

    def check(self, r: dict) -> tuple[dict, Optional[dict]]:
        """(the row, possibly flagged; its removal record or None)."""
        cfg, found = self.cfg, []
        for b in self.benches:
            for f in cfg.fields:
                found += [{**h, "our_field": f} for h in hits(joined(r, [f]), b, cfg.ngram, cfg.min_overlap)]
        found.sort(key=lambda h: -h["overlap"])
        names = sorted({h["benchmark"] for h in found})
        for nm in names:
            self.per[nm]["hits"] += 1
        if self.mode == "flag":
            return {**r, "contamination": ",".join(names)}, None
        if found:
            top = found[0]
            return r, {"reason": "contaminated", "benchmark": top["benchmark"], "benchmark_item": top["item"],
                       "similarity": top["overlap"], "detail": found[:5], "row": r}
        return r, None

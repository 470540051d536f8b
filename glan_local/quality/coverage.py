"""Coverage per taxonomy node: for each field and discipline, the rows planned, produced (in
data/) and published, the rows removed by reason, the requests that failed by level and reason
(levels/failures.jsonl), and the mean judge scores; and the branches that under-produce.

A run's rows and failures carry node ids ("3fa9c01b2e.9c0e11d2a4.77b0c3e5f1..."), whose first
three parts are the field, sub-field and discipline (levels/base.py name_part): the discipline
is the id's first three parts, the field its
first. Failures above a discipline (a field's sub-field list, say) count for their field. Rows
without such ids (a user's JSONL) are grouped by their field and discipline columns.

Planned rows are levels.planned_per_discipline's answers: an upper bound from the breadth, which
subjects merged as duplicates and syllabi with few concept combinations lower. So a branch
"under-produces" below UNDER of its plan; with no plan (not a run), below UNDER of what it
produced, i.e. when the quality step removed most of it.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any, Optional

from .judged import COLUMNS as JUDGE_COLUMNS
from .runinfo import RunInfo

UNDER = 0.5
_PART = re.compile(r"[0-9a-f]+")
NAMES = ("field", "subfield", "discipline")


def _node(node_id: Any) -> Optional[tuple[str, ...]]:
    parts = str(node_id or "").split(".")
    return tuple(parts) if all(_PART.fullmatch(p) for p in parts) else None


def planned_answers(config: dict) -> Optional[int]:
    """Rows one discipline plans, from a run's config (as saved in run-config.json)."""
    from ..levels import planned_per_discipline

    if not config.get("breadth"):
        return None
    ns = json.loads(json.dumps(config), object_hook=lambda d: SimpleNamespace(**d))
    try:
        return planned_per_discipline(ns).get("answers")
    except (AttributeError, TypeError):
        return None


class Coverage:
    def __init__(self, info: RunInfo):
        self.planned = planned_answers(info.config)
        self.names: dict[str, dict] = {}          # discipline key -> field/subfield/discipline names
        self.field_of: dict[str, str] = {}        # discipline key -> field key
        self.field_names: dict[str, str] = {}
        self.produced: Counter = Counter()
        self.published: Counter = Counter()
        self.removed: dict[str, Counter] = defaultdict(Counter)
        self.failed: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self.judge: dict[str, dict[str, list]] = defaultdict(lambda: {c: [0, 0] for c in JUDGE_COLUMNS})
        self.outside: dict[str, Counter] = defaultdict(Counter)   # failures above every field
        self.taxonomy = [d for d in info.disciplines if len(_node(d.get("id")) or ()) == 3]
        for d in self.taxonomy:
            self._name(d["id"], d)
        if info.run_dir is not None:
            self._failures(info.run_dir / "levels" / "failures.jsonl")

    def _name(self, key: str, src: dict) -> None:
        # A failed discipline is seen before its rows, with no names: the first row names it.
        if key not in self.names or (not any(self.names[key].values()) and any(src.get(n) for n in NAMES)):
            self.names[key] = {n: str(src.get(n) or "") for n in NAMES}
            node = _node(key)
            fkey = node[0] if node else self.names[key]["field"]
            self.field_of[key] = fkey
            if not self.field_names.get(fkey):
                self.field_names[fkey] = self.names[key]["field"]

    def key(self, r: dict) -> str:
        node = _node(r.get("id"))
        if node and len(node) >= 3:
            key = ".".join(node[:3])
        else:
            key = "/".join(str(r.get(n) or "") for n in NAMES)
        self._name(key, r)
        return key

    def _failures(self, path) -> None:
        if not path.exists():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                x = json.loads(line)
                kind = str(x.get("reason", "")).split(":")[0]
                node = _node(x.get("node"))
                if node and len(node) >= 3:
                    key = ".".join(node[:3])
                    self._name(key, {})
                    self.failed[key][x.get("level", "")][kind] += 1
                elif node:
                    self.failed["field:" + node[0]][x.get("level", "")][kind] += 1
                else:
                    self.outside[x.get("level", "")][kind] += 1

    # --- fed by the pipeline ------------------------------------------------------------------
    def add(self, r: dict) -> str:
        """An input row; returns its branch key for kept() / gone()."""
        k = self.key(r)
        self.produced[k] += 1
        if JUDGE_COLUMNS[0] in r:
            for c in JUDGE_COLUMNS:
                if isinstance(r.get(c), (int, float)):
                    self.judge[k][c][0] += r[c]
                    self.judge[k][c][1] += 1
        return k

    def kept(self, k: str) -> None:
        self.published[k] += 1

    def gone(self, k: str, reason: str) -> None:
        self.removed[k][reason] += 1

    # --- the figures --------------------------------------------------------------------------
    def _entry(self, keys: list[str], planned: Optional[int], extra_failed=None) -> dict:
        removed: Counter = Counter()
        failed: dict[str, Counter] = defaultdict(Counter)
        sums = {c: [0, 0] for c in JUDGE_COLUMNS}
        for k in keys:
            removed.update(self.removed.get(k, {}))
            for lv, c in self.failed.get(k, {}).items():
                failed[lv].update(c)
            for col, (s, n) in self.judge.get(k, {}).items():
                sums[col][0] += s
                sums[col][1] += n
        for lv, c in (extra_failed or {}).items():
            failed[lv].update(c)
        produced, published = sum(self.produced[k] for k in keys), sum(self.published[k] for k in keys)
        base = planned if planned else produced
        e = {"planned": planned, "produced": produced, "published": published, "removed": dict(removed),
             "failed": {lv: dict(c) for lv, c in failed.items()},
             "share": round(published / base, 3) if base else 0.0}
        judge = {c.replace("judge_", ""): round(s / n, 2) for c, (s, n) in sums.items() if n}
        if judge:
            e["judge"] = judge
        return e

    def figures(self) -> dict:
        in_taxonomy = [d["id"] for d in self.taxonomy]
        keys = in_taxonomy + sorted(set(self.names) - set(in_taxonomy))
        disciplines, by_field = [], defaultdict(list)
        for k in keys:
            # Every discipline node of a run was planned: in the taxonomy, or seen failing.
            planned = self.planned if _node(k) else None
            disciplines.append({"id": k if _node(k) else None, **self.names[k], **self._entry([k], planned)})
            by_field[self.field_of[k]].append((k, planned))
        for fkey in sorted(k[len("field:"):] for k in self.failed if k.startswith("field:")):
            by_field.setdefault(fkey, [])        # a field whose sub-fields or disciplines never came
        fields = []
        for fkey, mine in by_field.items():
            planned = sum(p or 0 for _, p in mine) or None
            fields.append({"id": fkey if fkey.isdigit() else None, "field": self.field_names.get(fkey, ""),
                           "disciplines": len(mine),
                           **self._entry([k for k, _ in mine], planned, self.failed.get("field:" + fkey))})
        branches = [{"level": "field", **f} for f in fields] + [{"level": "discipline", **d} for d in disciplines]
        under = sorted((e for e in branches if e["share"] < UNDER),
                       key=lambda e: (e["share"], e["level"] != "field", e.get("id") or ""))
        brief = ("level", "id", *NAMES, "planned", "produced", "published", "share")
        return {"planned_per_discipline": self.planned, "under_threshold": UNDER,
                "basis": "planned" if self.planned is not None else "produced",
                "fields": fields, "disciplines": disciplines,
                "under_producing": [{k: e[k] for k in brief if k in e} for e in under],
                "failed_outside_fields": {lv: dict(c) for lv, c in self.outside.items()}}

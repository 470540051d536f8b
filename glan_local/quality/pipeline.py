"""The quality step, in order: judge threshold, decontamination, dedup, held-out split, export,
card, report, and (only if a repo id is configured) upload.

Order matters for the reasons recorded: decontamination comes before dedup so that every copy
of a benchmark question is reported as contaminated, not as a duplicate; the judge's threshold
comes first so that a poorly graded first occurrence cannot knock out a good later duplicate.
"""
from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from . import card, judged, publish, report
from .decontam import decontaminate
from .dedup import dedup
from .diversity import diversity
from .rows import is_run_dir, load_rows
from .runinfo import read_run

REMOVED_KEYS = ("reason", "duplicate_of", "duplicate_in", "similarity", "benchmark", "benchmark_item", "detail")


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare(rows: list[dict], question: str = "question", answer: str = "answer") -> list[dict]:
    """Canonical columns for any GLAN-style rows: question/answer, an id, and a chat `messages`."""
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        if question != "question" and question in r:
            r["question"] = r.pop(question)
        if answer != "answer" and answer in r:
            r["answer"] = r.pop(answer)
        if "question" not in r:
            raise ValueError(f"row {i} has no '{question}' column; name it with --question-field")
        r.setdefault("id", f"{i:06d}")
        if "messages" not in r and r.get("answer") is not None:
            r["messages"] = [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]
        out.append(r)
    return out


def preflight(q: Any) -> None:
    """Read every benchmark and earlier dataset now, so a file without a usable text column
    stops a run before the model loads, not after hours of generation."""
    from ..config import ConfigError
    from .decontam import load_benchmark

    for src in q.decontam.benchmarks:
        if not str(src).startswith("hub:"):
            try:
                load_benchmark(src, "check", list(q.decontam.benchmark_fields), q.decontam.ngram)
            except (ValueError, OSError) as e:
                raise ConfigError("quality.decontam.benchmarks", f"cannot use '{src}': {e}",
                                  "give a JSONL/parquet/save_to_disk benchmark, or name its text column "
                                  "with quality.decontam.benchmark_fields")
    for src in q.dedup.against:
        if not str(src).startswith("hub:"):
            try:
                prepare(load_rows(src))
            except (ValueError, OSError) as e:
                raise ConfigError("quality.dedup.against", f"cannot use '{src}': {e}",
                                  "give a JSONL/parquet file or folder of rows with a question column")


def run_quality(q: Any, out_dir: Path, *, run_dir: Optional[Path] = None, source: Optional[str] = None,
                seed: int = 0, say: Optional[Callable[[str], None]] = None, question_field: str = "question",
                answer_field: str = "answer", command: Optional[str] = None) -> dict:
    """q is a QualityConfig. Reads run_dir's dataset (data/) or `source`; writes out_dir; returns
    the figures (also in out_dir/quality/summary.json)."""
    say = say or (lambda m: None)
    if run_dir is None and source is not None and is_run_dir(Path(source)):
        run_dir = Path(source)
    src = str(run_dir / "data") if run_dir is not None else str(source)
    rows = prepare(load_rows(src), question_field, answer_field)
    info = read_run(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    removed: list[dict] = []
    figures: dict[str, Any] = {"source": src, "input_rows": len(rows), "out_dir": str(out_dir)}

    if judged.has_scores(rows):
        rows, gone, figures["judge"] = judged.apply_threshold(rows, q.judge.min_score)
        removed += gone
    if q.decontam.benchmarks:
        res = decontaminate(rows, q.decontam, say)
        rows, removed = res.kept, removed + res.removed
        figures["decontam"] = {"mode": getattr(q.decontam.mode, "value", q.decontam.mode), "ngram": q.decontam.ngram,
                               "min_overlap": q.decontam.min_overlap, "fields": list(q.decontam.fields),
                               "benchmarks": res.per_benchmark}
    if q.dedup.enabled:
        earlier = [(p, prepare(load_rows(p))) for p in q.dedup.against]
        res = dedup(rows, q.dedup, earlier)
        rows, removed = res.kept, removed + res.removed
        figures["dedup"] = {"fields": list(q.dedup.fields), "threshold": q.dedup.threshold if q.dedup.near else None,
                            "num_perm": q.dedup.num_perm, "shingle_size": q.dedup.shingle_size,
                            "against": list(q.dedup.against), "counts": res.counts}
    figures["removed"] = dict(Counter(r["reason"] for r in removed))

    train, held = publish.heldout_split(rows, q.publish.heldout_per_discipline, seed)
    splits = {"train": train, **({q.publish.heldout_split: held} if held else {})}
    dd = publish.to_dataset_dict(splits)
    files = publish.write(dd, splits, out_dir, q.publish.shard_rows)
    figures["rows"] = {s: len(v) for s, v in splits.items() if v}
    figures["files"] = files

    qdir = out_dir / "quality"
    qdir.mkdir(exist_ok=True)
    _atomic(qdir / "removed.jsonl", "".join(
        json.dumps({**{k: x.get(k) for k in REMOVED_KEYS}, "row": x["row"]}, ensure_ascii=False) + "\n"
        for x in removed))

    published = train + held
    figures["diversity"] = diversity([str(r.get("question", "")) for r in published],
                                     q.report.enabled and q.report.embeddings, q.report.embedding_sample, seed)
    command = command or ("glan-local-quality " + shlex.join([str(run_dir or source), "-o", str(out_dir)]))
    columns = list(dd["train"].column_names) if "train" in dd else []
    _atomic(out_dir / "README.md", card.render(
        splits=figures["rows"], columns=columns, rows=published, info=info, quality=figures,
        license=q.publish.license, pretty_name=q.publish.pretty_name, source=src, command=command))
    if q.report.enabled:
        figures["report"] = str(report.write(out_dir, published, info, figures, q.publish.pretty_name))
    if q.publish.push_to_hub:
        figures["pushed_to"] = publish.push(out_dir, q.publish.push_to_hub, q.publish.private, say)
    _atomic(qdir / "summary.json", json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    say(f"quality: {len(published)} of {figures['input_rows']} rows published to {out_dir} "
        f"(removed: {figures['removed'] or 'none'})" + (f"; report: {figures['report']}" if q.report.enabled else ""))
    return figures

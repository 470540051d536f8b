"""The quality step, in order: judge threshold, language check, decontamination, dedup,
held-out split, export, card, report, and (only if a repo id is configured) upload.

Order matters for the reasons recorded: decontamination comes before dedup so that every copy
of a benchmark question is reported as contaminated, not as a duplicate; the judge's threshold
comes first so that a poorly graded first occurrence cannot knock out a good later duplicate;
the language check comes before decontamination and dedup, so that a reply in the wrong language
counts as the generation failure it is.

Memory stays bounded: rows stream from the source twice, a chunk at a time. The first pass
decides (removed rows go straight to quality/removed.jsonl) and keeps, per kept row, only its
position and discipline; the held-out rows are drawn from those positions; the second pass
writes the splits and feeds the card's and the report's counts. What grows with the row count
is the dedup index (hashes and ids), the positions and two lengths a row.
"""
from __future__ import annotations

import json
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..atomic import atomic_path, atomic_write_text
from . import card, coverage, judged, langcheck, publish, report
from .decontam import Decontaminator
from .dedup import CHUNK, Deduper
from .diversity import diversity
from .rows import chunks, is_run_dir, iter_rows
from .runinfo import read_run
from .stats import Published

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import QualityConfig

REMOVED_KEYS = ("reason", "duplicate_of", "duplicate_in", "similarity", "benchmark", "benchmark_item", "detail")


def prepare_row(r: dict, i: int, question: str = "question", answer: str = "answer") -> dict:
    """Canonical columns for a GLAN-style row: question/answer, an id, and a chat `messages`."""
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
    return r


def _source(src: str, question: str = "question", answer: str = "answer") -> Iterator[dict]:
    return (prepare_row(r, i, question, answer) for i, r in enumerate(iter_rows(src)))


def preflight(q: QualityConfig) -> None:
    """Read every benchmark and earlier dataset now, so a file without a usable text column
    stops a run before the model loads, not after hours of generation."""
    from ..errors import ConfigError
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
                for _ in _source(src):
                    pass
            except (ValueError, OSError) as e:
                raise ConfigError("quality.dedup.against", f"cannot use '{src}': {e}",
                                  "give a JSONL/parquet file or folder of rows with a question column")


class _Pass1:
    """The deciding pass: every filter sees every row once, in order."""

    def __init__(self, stages: list, dedup: Optional[Deduper], cov: coverage.Coverage, qdir: Path):
        self.stages, self.dedup, self.cov = stages, dedup, cov
        names = [s.name for s in stages] + (["dedup"] if dedup else [])
        self.files = {n: open(qdir / f"removed.{n}.tmp", "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
                      for n in names}
        self.counts: dict[str, Counter] = {n: Counter() for n in names}
        self.by_discipline: dict[str, list[int]] = defaultdict(list)
        self.keep = bytearray()
        self.flags: dict[int, dict] = {}      # position -> flag columns with a value (mode=flag)
        self.schema = publish.Schema()
        self.flag_columns = [s.adds for s in stages if s.adds]    # columns that mode=flag fills

    def _removed(self, stage: str, x: dict, branch: str) -> None:
        self.counts[stage][x["reason"]] += 1
        self.cov.gone(branch, x["reason"])
        self.files[stage].write(json.dumps({**{k: x.get(k) for k in REMOVED_KEYS}, "row": x["row"]},
                                           ensure_ascii=False) + "\n")

    def run(self, rows: Iterator[dict]) -> int:
        n = 0
        for chunk in chunks(rows, CHUNK):
            items = []
            for r in chunk:
                pos, branch = n, self.cov.add(r)
                n += 1
                self.keep.append(0)
                for st in self.stages:
                    r, gone = st.check(r)
                    if gone:
                        self._removed(st.name, gone, branch)
                        break
                else:
                    items.append((pos, branch, r))
            if self.dedup:
                verdicts = self.dedup.check([r for _, _, r in items])
                for (_, branch, _), gone in zip(items, verdicts):
                    if gone:
                        self._removed("dedup", gone, branch)
                items = [it for it, gone in zip(items, verdicts) if not gone]
            for pos, branch, r in items:
                self.keep[pos] = 1
                self.cov.kept(branch)
                self.by_discipline[str(r.get("discipline", ""))].append(pos)
                if any(r.get(c) for c in self.flag_columns):
                    self.flags[pos] = {c: r[c] for c in self.flag_columns if r.get(c)}
            self.schema.add([r for _, _, r in items])
        return n

    def discard(self, qdir: Path) -> None:
        for n, f in self.files.items():
            f.close()
            (qdir / f"removed.{n}.tmp").unlink(missing_ok=True)

    def close(self, qdir: Path) -> dict:
        """quality/removed.jsonl, grouped by filter in their order; the counts by reason."""
        for f in self.files.values():
            f.close()
        with atomic_path(qdir / "removed.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
            for n in self.files:
                part = qdir / f"removed.{n}.tmp"
                with open(part, encoding="utf-8") as f:
                    for line in f:
                        out.write(line)
                part.unlink()
        merged: dict[str, int] = {}
        for c in self.counts.values():
            merged.update(c)
        return merged


def run_quality(q: QualityConfig, out_dir: Path, *, run_dir: Optional[Path] = None, source: Optional[str] = None,
                seed: int = 0, say: Optional[Callable[[str], None]] = None, question_field: str = "question",
                answer_field: str = "answer", command: Optional[str] = None, language: Optional[str] = None) -> dict:
    """q is a QualityConfig. Reads run_dir's dataset (data/) or `source`; writes out_dir; returns
    the figures (also in out_dir/quality/summary.json). `language` (a name or ISO code) is what
    the rows must be in; by default each row's language_code column, else the run's language."""
    say = say or (lambda m: None)
    if run_dir is None and source is not None and is_run_dir(Path(source)):
        run_dir = Path(source)
    src = str(run_dir / "data") if run_dir is not None else str(source)
    info = read_run(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qdir = out_dir / "quality"
    qdir.mkdir(exist_ok=True)
    figures: dict[str, Any] = {"source": src, "input_rows": 0, "out_dir": str(out_dir)}

    stages: list = []
    judge = judged.Threshold(q.judge.min_score) if judged.has_scores(iter_rows(src)) else None
    if judge:
        stages.append(judge)
    lang_on = q.language.enabled
    lang, lang_note = None, None
    if not lang_on:
        lang_note = {"note": "off (quality.language.enabled=false)"}
    elif (why := langcheck.available()) is not None:
        say(f"language check: not run: {why}")
        lang_note = {"note": f"not run: {why}"}
    else:
        lang = langcheck.LanguageCheck(q, language, info.config.get("language"), say)
        stages.append(lang)
    decon = Decontaminator(q.decontam, say) if q.decontam.benchmarks else None
    if decon:
        stages.append(decon)
    dd = Deduper(q.dedup) if q.dedup.enabled else None
    if dd is not None:
        for path in q.dedup.against:
            dd.index_earlier(path, _source(path))

    cov = coverage.Coverage(info)
    first = _Pass1(stages, dd, cov, qdir)
    try:
        figures["input_rows"] = first.run(_source(src, question_field, answer_field))
    except BaseException:
        first.discard(qdir)
        raise
    removed = first.close(qdir)
    if judge:
        figures["judge"] = judge.figures()
    figures["language"] = lang.figures() if lang else lang_note
    if decon:
        figures["decontam"] = {"mode": decon.mode, "ngram": q.decontam.ngram, "min_overlap": q.decontam.min_overlap,
                               "fields": list(q.decontam.fields), "benchmarks": decon.per}
    if dd:
        figures["dedup"] = {"fields": list(q.dedup.fields), "threshold": q.dedup.threshold if q.dedup.near else None,
                            "num_perm": q.dedup.num_perm, "shingle_size": q.dedup.shingle_size,
                            "against": list(q.dedup.against), "counts": dd.counts}
    figures["removed"] = removed
    first.dedup = dd = None          # the dedup index is not needed any more

    held = publish.heldout_positions(first.by_discipline, q.publish.heldout_per_discipline, seed)
    first.by_discipline = {}
    n_kept = sum(first.keep)
    sizes = {"train": n_kept - len(held), q.publish.heldout_split: len(held)}
    writer = publish.Writer(out_dir, sizes, first.schema.schema, q.publish.shard_rows)
    pub = Published(n_kept, seed, q.report.embedding_sample)
    seen = {name: 0 for name in sizes}
    for pos, r in enumerate(_source(src, question_field, answer_field)):
        if not first.keep[pos]:
            continue
        for c in first.flag_columns:          # as the first pass left the row
            r = {**r, c: first.flags.get(pos, {}).get(c, "")}
        split = q.publish.heldout_split if pos in held else "train"
        writer.write(split, r)
        pub.add(r, seen[split] + (sizes["train"] if split != "train" else 0))
        seen[split] += 1
    files = writer.close()
    figures["rows"] = {s: n for s, n in sizes.items() if n}
    figures["files"] = files
    figures["coverage"] = cov.figures()

    figures["diversity"] = diversity(pub.distinct_texts(), pub.embed_texts(), q.report.enabled and q.report.embeddings)
    command = command or ("glan-local-quality " + shlex.join([str(run_dir or source), "-o", str(out_dir)]))
    columns = list(first.schema.schema.names) if sizes["train"] else []
    atomic_write_text(out_dir / "README.md", card.render(
        splits=figures["rows"], columns=columns, stats=pub, info=info, quality=figures,
        license=q.publish.license, pretty_name=q.publish.pretty_name, source=src, command=command))
    if q.report.enabled:
        figures["report"] = str(report.write(out_dir, pub, info, figures, q.publish.pretty_name))
    if q.publish.push_to_hub:
        figures["pushed_to"] = publish.push(out_dir, q.publish.push_to_hub, q.publish.private, say)
    atomic_write_text(qdir / "summary.json", json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    say(f"quality: {pub.n} of {figures['input_rows']} rows published to {out_dir} "
        f"(removed: {figures['removed'] or 'none'})" + (f"; report: {figures['report']}" if q.report.enabled else ""))
    return figures

"""Peak memory of the quality step on synthetic runs of N rows (issue 17, item 5).

    .venv/bin/python scripts/quality_memory.py                  # 10k and 100k rows
    .venv/bin/python scripts/quality_memory.py --rows 1000 --keep /tmp/qm

For each N it writes a synthetic run directory (data/ as one parquet file, levels/taxonomy.jsonl,
levels/failures.jsonl, run-config.json) whose rows look like real ones (long chain-of-thought
answers, a `messages` copy, provenance columns, 1% exact and 1% near duplicates), then runs
`glan-local-quality` on it in a child process and reads that child's peak RSS from wait4().
The embedding model is left out (report.embeddings=false): it is a fixed cost, not a per-row one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = """the of and to in is that for it as was with be by on not he this are or his from at which but have an
they you were her she there been one all we their has would when if so no what up out who them some could
more into time other only then its also than two may first any new like these our over such after most
made between many before must through back years where much your way well down should because each just
those people how too little state good very make world still see own men work long here get both under
never day same another know while last might great old year off come since against go came right used
take three energy reaction cell force market price law theory model system value rate water light heat
mass charge field wave data function equation number graph sample error mean variance test student
history war trade culture language art music design plant soil crop animal disease drug patient health
court contract tax firm labour capital money bank risk policy vote city river climate carbon metal
circuit signal network code program memory process thread matrix vector angle triangle circle area
volume density pressure temperature acid base salt protein gene enzyme membrane organ tissue species""".split()
FIELDS = ["Natural Sciences", "Formal Sciences", "Humanities", "Social Sciences", "Applied Sciences",
          "Manufacturing", "Services", "Agriculture"]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_run(run: Path, n: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    (run / "data").mkdir(parents=True, exist_ok=True)
    (run / "levels").mkdir(exist_ok=True)
    discs = [(f, s, d) for f in range(len(FIELDS)) for s in range(2) for d in range(4)]   # 64 disciplines
    names = {t: (FIELDS[t[0]], f"{FIELDS[t[0]]} area {t[1]}", f"{FIELDS[t[0]]} discipline {t[1]}.{t[2]}")
             for t in discs}
    per = -(-n // len(discs))
    breadth = {"name": "synthetic", "fields": 8, "subfields_per_field": 2, "disciplines_per_subfield": 4,
               "subject_queries": 10, "subjects_per_query": 15, "max_subjects_per_discipline": 10,
               "questions_per_syllabus": -(-per * 11 // 100)}      # planned ~10% above what is made
    (run / "run-config.json").write_text(json.dumps({"config": {
        "language": "English", "seed": 0, "breadth": breadth, "quality": {"judge": {"enabled": False}}}}))
    with open(run / "levels" / "taxonomy.jsonl", "w") as f:
        for t in discs:
            f.write(json.dumps({"id": ".".join(f"{i:05d}" for i in t), **dict(zip(("field", "subfield", "discipline"),
                                                                                  names[t]))}) + "\n")
    with open(run / "levels" / "failures.jsonl", "w") as f:
        for i in range(n // 50):
            t = discs[i % len(discs)]
            f.write(json.dumps({"level": "answers", "node": ".".join(f"{x:05d}" for x in (*t, i, 0)), "ask": 0,
                                "attempts": 3, "reason": rng.choice(["cut: max_tokens", "invalid: schema"])}) + "\n")
    writer, batch, recent = None, [], []
    try:
        for i in range(n):
            t = discs[i * len(discs) // n]
            q = _text(rng, 12, 40) + "?"
            if recent and rng.random() < 0.01:
                q = rng.choice(recent)                                        # exact duplicate
            elif recent and rng.random() < 0.01:
                ws = rng.choice(recent).split()
                ws[rng.randrange(len(ws))] = rng.choice(WORDS)                 # near duplicate
                q = " ".join(ws)
            recent = (recent + [q])[-50:]
            a = _text(rng, 80, 250) + "."
            f_, s_, d_ = names[t]
            batch.append({
                "id": ".".join(f"{x:05d}" for x in (*t, i // 10, i % 10)), "field": f_, "subfield": s_,
                "discipline": d_, "subject": f"subject {i % 97}", "subject_level": "advanced",
                "strategy": "two-session" if i % 2 else "single-session", "session_indices": [1, 2][: 1 + i % 2],
                "session_titles": ["session one", "session two"][: 1 + i % 2],
                "key_concepts": WORDS[i % 50: i % 50 + 1 + i % 4], "question": q, "question_seed": i,
                "question_request": f"{i:032x}", "syllabus_request": f"{i // 10:032x}", "answer": a,
                "answer_seed": i, "answer_request": f"{i + n:032x}",
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "model": "synthetic", "answer_model": "synthetic", "language": "English", "language_code": "en"})
            if len(batch) == 5000 or i == n - 1:
                table = pa.Table.from_pylist(batch)
                if writer is None:
                    writer = pq.ParquetWriter(run / "data" / "train-00000-of-00001.parquet", table.schema)
                writer.write_table(table)
                batch = []
    finally:
        if writer is not None:
            writer.close()


def measure(run: Path, out: Path, extra: list[str]) -> tuple[float, float, float, int]:
    """(peak RSS MiB, CPU s, wall s, exit code) of the quality step on `run`, in its own process."""
    cmd = [sys.executable, "-m", "glan_local.quality.cli", str(run), "-o", str(out), "report.embeddings=false", *extra]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)          # this child's own rusage, not all children's
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, time.monotonic() - t, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--keep", help="folder for the synthetic runs (reused when present); default: a temp dir")
    ap.add_argument("options", nargs="*", help="quality key=value settings passed to glan-local-quality")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="quality-memory-"))
    # CPU seconds too: on a shared machine the wall time says more about the neighbours.
    print(f"{'rows':>8} {'data MiB':>9} {'peak RSS MiB':>13} {'CPU s':>7} {'wall s':>8}")
    for n in args.rows:
        run = base / f"run-{n}"
        if not (run / "data" / "train-00000-of-00001.parquet").exists():
            make_run(run, n)
        size = sum(f.stat().st_size for f in (run / "data").iterdir()) / 2**20
        rss, cpu, wall, code = measure(run, base / f"publish-{n}", args.options)
        print(f"{n:>8} {size:>9.1f} {rss:>13.0f} {cpu:>7.1f} {wall:>8.1f}"
              + ("" if code == 0 else f"  FAILED (exit {code})"), flush=True)
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

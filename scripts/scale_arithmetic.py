#!/usr/bin/env python3
"""The paper's scale (~10M question-answer pairs) on glan-local's design, as arithmetic.

Request counts come from the real breadth=paper config (conf/breadth/paper.yaml) and the same
per-discipline planning the shards use (glan_local/shard.py). Tokens per request and GPU
throughputs are ASSUMPTIONS, stated below: change them here and paste the output into the
docs/sweeps-and-clusters.md (tests/test_scale.py checks that the page holds this script's output).

    .venv/bin/python scripts/scale_arithmetic.py
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Assumed tokens per request: (prompt, of which served from vLLM's prefix cache, output).
TOKENS = {
    "taxonomy": (250, 0, 150),        # a list of names
    "subjects": (400, 0, 1500),       # 15 subjects, each with level, introduction, <= 8 subtopics
    "syllabus": (500, 0, 3000),       # ~20 sessions x (title, description, 5 concepts) + intro
    "questions": (2500, 2200, 150),   # the full syllabus first (shared by a syllabus's 520 questions), then the ask
    "answers": (300, 0, 500),         # the question; a worked, step-by-step answer
}
BYTES_PER_TOKEN = 4                   # English text
ROW_PROVENANCE_BYTES = 600            # ids, names, sessions, concepts, seeds, request keys, model, language
PARQUET_SHARE = 0.4                   # parquet (compressed) / JSONL
STORE_ROW_OVERHEAD = 700              # per stored reply: key, level, node, seeds, counts, index, block ids
# Assumed throughput per GPU at large batch with vLLM (not measured here: no GPU on this machine).
TEACHERS = [
    # name, GPUs per engine, output tok/s per GPU, uncached prompt (prefill) tok/s per GPU
    ("qwen2.5-7b-instruct, 1 x H100 bf16", 1, 2750, 15000),
    ("llama-3.3-70b-instruct, 8 x H100 tp8", 8, 450, 2000),
]
SHARD_COUNTS = (16, 32, 64, 128)      # a 7B shard is one GPU (8 per node), a 70B tp8 shard one node


def paper_config():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from glan_local.cli import register_resolvers
    from glan_local.config import GlanConfig, register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["breadth=paper"])
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), cfg))


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def main() -> None:
    from glan_local.levels import planned_per_discipline

    cfg = paper_config()
    b = cfg.breadth
    disciplines = b.fields * b.subfields_per_field * b.disciplines_per_subfield
    per = planned_per_discipline(cfg)
    requests = {"taxonomy": 1 + b.fields + b.fields * b.subfields_per_field,
                **{lv: n * disciplines for lv, n in per.items() if lv in TOKENS}}
    rows = requests["answers"]

    out = [f"breadth=paper: {b.fields} fields x {b.subfields_per_field} sub-fields x {b.disciplines_per_subfield} "
           f"disciplines = {disciplines} disciplines; {b.subject_queries} subject lists of {b.subjects_per_query}, "
           f"<= {b.max_subjects_per_discipline} subjects each; {b.questions_per_syllabus} questions per syllabus",
           "Requests are upper bounds: every subject distinct, no failure, no retry. Tokens per request are assumed.",
           "",
           f"{'level':<10}{'requests':>12}{'prompt/req':>11}{'cached/req':>11}{'output/req':>11}"
           f"{'prompt tok':>12}{'uncached':>10}{'output tok':>12}"]
    tot = {"prompt": 0, "uncached": 0, "output": 0}
    for lv, n in requests.items():
        p, c, o = TOKENS[lv]
        tot["prompt"] += n * p
        tot["uncached"] += n * (p - c)
        tot["output"] += n * o
        out.append(f"{lv:<10}{n:>12,}{p:>11,}{c:>11,}{o:>11,}{human(n * p):>12}{human(n * (p - c)):>10}{human(n * o):>12}")
    out.append(f"{'total':<10}{sum(requests.values()):>12,}{'':>33}{human(tot['prompt']):>12}"
               f"{human(tot['uncached']):>10}{human(tot['output']):>12}")

    out += ["", "GPU time = output / decode rate + uncached prompt / prefill rate (rates assumed, not measured)",
            f"{'teacher':<38}{'out tok/s/GPU':>14}{'prefill/GPU':>12}{'GPU-hours':>10}{'per discipline':>16}"]
    engine_hours = []
    for name, gpus, decode, prefill in TEACHERS:
        gpu_h = (tot["output"] / decode + tot["uncached"] / prefill) / 3600
        engine_hours.append(gpu_h / gpus / disciplines)       # wall hours of one engine per discipline
        out.append(f"{name:<38}{decode:>14,}{prefill:>12,}{gpu_h:>10,.0f}{gpu_h / disciplines:>11.1f} GPU-h")
    out += ["", "Shards (one engine each; disciplines split evenly): GPUs and wall hours per choice of shard.count",
            f"{'shard.count':<12}" + "".join(f"{n.split(',')[0]:>30}" for n, *_ in TEACHERS)]
    for count in SHARD_COUNTS:
        cells = []
        for (name, gpus, *_), h in zip(TEACHERS, engine_hours):
            cells.append(f"{count * gpus:>6} GPUs {math.ceil(disciplines / count) * h:>6.1f} h")
        out.append(f"{count:<12}" + "".join(f"{c:>30}" for c in cells))

    text_row = (TOKENS["questions"][2] + TOKENS["answers"][2]) * BYTES_PER_TOKEN
    row_bytes = 2 * text_row + ROW_PROVENANCE_BYTES             # question + answer, again in `messages`
    q_rec = TOKENS["questions"][2] * BYTES_PER_TOKEN + ROW_PROVENANCE_BYTES
    # Prompts are stored as content-addressed paragraphs: the part a prompt shares with others
    # (a syllabus, for its questions; the same part vLLM's prefix cache serves) is stored once.
    store = sum(n * ((TOKENS[lv][0] - TOKENS[lv][1] + TOKENS[lv][2]) * BYTES_PER_TOKEN + STORE_ROW_OVERHEAD)
                for lv, n in requests.items())
    out += ["", "Storage (bytes per token assumed 4; no retries counted)",
            f"  rows                         {rows:,}",
            f"  data/train.jsonl             {human(rows * row_bytes)}B ({row_bytes:,} B/row: Q+A twice, with provenance)",
            f"  data/*.parquet               {human(rows * row_bytes * PARQUET_SHARE)}B (assumed {PARQUET_SHARE:.0%} of JSONL)",
            f"  levels/*.jsonl               {human(rows * (row_bytes + q_rec))}B (answers = rows, plus questions)",
            f"  store.sqlite (all shards)    {human(store)}B (every reply and prompt; a syllabus shared by "
            f"its questions' prompts stored once)"]
    print("\n".join(out))


if __name__ == "__main__":
    main()

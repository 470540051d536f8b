#!/usr/bin/env python
"""The orchestrator's own ceiling: how many replies/s glan-local itself can take, when the
teacher is never what it waits for.

    .venv/bin/python scripts/ceiling.py                         # 2,000 and 20,000 requests
    .venv/bin/python scripts/ceiling.py --sizes 2000 5000 20000
    .venv/bin/python scripts/ceiling.py --code /path/to/other/checkout   # the same, for other code

The real levels, scheduler, store and export run on a flat taxonomy file of N/20 disciplines
(2 subject lists, 2 syllabi, 8 questions and 8 answers each: 20 requests per discipline), each
size in its own process, with INSTANT as the engine: a measuring instrument that answers every
request at once with JSON shaped by its schema. It is never used by a test that claims end to
end. Printed per size: replies/s over the whole generation, replies/s of glan-local's own time
(generation minus the instrument's step), the share of that own time in each part of the hot
path (render, key, store, validate, export), and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PER_DISCIPLINE = 20
BREADTH = ["breadth=tiny", "breadth.subject_queries=2", "breadth.subjects_per_query=2",
           "breadth.max_subjects_per_discipline=2", "breadth.questions_per_syllabus=4", "quality.enabled=false"]


class Instant:
    """INSTANT, a measuring instrument: every submitted request is finished at the next step,
    with text shaped by its schema (distinct strings per seed, so lists do not merge away)."""

    version = ""          # no vLLM made these replies
    notes: list = []

    def __init__(self):
        self.pending: list = []
        self.templates: dict = {}

    def submit(self, req) -> None:
        self.pending.append(req)

    def abort(self, keys) -> None:
        gone = set(keys)
        self.pending = [r for r in self.pending if r.key not in gone]

    def step(self):
        from glan_local.engine import Completion

        done, self.pending = self.pending, []
        out = []
        for r in done:
            seed = str(r.sampling["seed"])
            if r.schema is None:
                text = f"An answer, worked step by step ({seed})."
            else:
                key = getattr(r, "schema_sha", None) or json.dumps(r.schema, sort_keys=True)
                if key not in self.templates:
                    self.templates[key] = json.dumps(_shape(r.schema, r.schema.get("$defs", {}), [0]))
                text = self.templates[key].replace("@", seed)
            out.append(Completion(r.key, text, "stop", 10, len(text) // 4, 0, 0.0))
        return out

    def close(self) -> None:
        pass


def _shape(schema: dict, defs: dict, n: list):
    if "$ref" in schema:
        return _shape(defs[schema["$ref"].split("/")[-1]], defs, n)
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("type") == "object":
        return {k: _shape(v, defs, n) for k, v in schema["properties"].items()}
    if schema.get("type") == "array":
        return [_shape(schema["items"], defs, n) for _ in range(schema.get("maxItems", schema.get("minItems", 1)))]
    n[0] += 1
    return f"item {n[0]} @"


def one(size: int, out: Path) -> None:
    """In the child process: compose the config as the CLI would and run the pipeline."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from glan_local import cli
    from glan_local.config import GlanConfig, register
    from glan_local.run import generate

    register()
    cli.register_resolvers()
    model = out / "model"      # passes the model checks; INSTANT never reads it
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0")
    (model / "chat_template.jinja").write_text("{{ messages }}")
    tax = out / "disciplines.txt"
    tax.write_text("".join(f"Discipline {i}\n" for i in range(size // PER_DISCIPLINE)))
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        raw = compose(config_name="config", overrides=[*BREADTH, f"model.path={model}", f"taxonomy.file={tax}"])
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), raw))
    generate(cfg, out / "run", engine_factory=lambda p: Instant())


def measure(size: int, code: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        t = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--one", str(size), "--out", tmp], cwd=code, env=env,
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"size {size} failed:\n{p.stderr[-3000:]}")
        s = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    t = s["totals"]
    replies = sum(lv["attempts"] for lv in s["levels"].values())
    own = t["generation_s"] - t["engine_step_s"]
    parts = t.get("hot_path_s", {})
    return {"size": size, "replies": replies, "rows": s["rows"], "generation_s": t["generation_s"],
            "replies_per_s": replies / t["generation_s"] if t["generation_s"] else 0.0,
            "own_replies_per_s": replies / own if own > 0 else 0.0, "own_s": own + parts.get("export", 0.0),
            "parts": parts, "peak_rss_mb": t["peak_rss_mb"], "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 20000], help="requests per run")
    ap.add_argument("--code", type=Path, default=ROOT, help="the glan-local checkout to measure")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.out)
        return
    code = args.code.resolve()
    rows = [measure(n, code) for n in args.sizes]
    parts = ["render", "key", "store", "validate", "export"]
    head = ["requests", "replies", "rows", "replies/s", "replies/s (own time)", *(f"{p} %" for p in parts),
            "other %", "peak RSS MB"]
    lines = [f"glan-local at {code}", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        own = r["own_s"]
        shares = [r["parts"][p] / own * 100 if p in r["parts"] and own else None for p in parts]
        other = 100 - sum(x for x in shares if x is not None) if all(x is not None for x in shares) else None
        cells = [f"{r['size']:,}", f"{r['replies']:,}", f"{r['rows']:,}", f"{r['replies_per_s']:,.0f}",
                 f"{r['own_replies_per_s']:,.0f}", *("-" if x is None else f"{x:.0f}" for x in shares),
                 "-" if other is None else f"{other:.0f}", f"{r['peak_rss_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

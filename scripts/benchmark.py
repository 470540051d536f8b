#!/usr/bin/env python
"""Throughput benchmark: the pipeline against raw vLLM on the same requests, in one sitting.

    .venv/bin/python scripts/benchmark.py                 # tiny and small (~4x), all rows
    .venv/bin/python scripts/benchmark.py --sizes tiny --skip-backends

Every measurement runs in its own process (one vLLM engine per process). Rows:
- pipeline (pipelined, the default) and level-by-level (engine.pipelined=false), per size:
  useful generated tokens (speculative attempts found unneeded excluded) / generation wall
  time, and peak RSS of the orchestrating process;
- raw: every request the pipelined run needed (same prompts, schemas, seeds, max_tokens, retries
  included) replayed as ONE vLLM batch: the ideal the pipeline is compared with;
- per structured-output backend, and unconstrained: the same requests as one batch: schema
  compile time (first request per schema alone), share of replies valid first time, tokens/s.
Ratios are what matter: this machine is shared and noisy, absolute times are not stable.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SIZES = {"tiny": ["breadth=tiny"], "small": ["breadth=small"]}


def run_pipeline(out: Path, size: str, pipelined: bool, extra: list[str]) -> dict:
    cmd = [str(BIN / "glan-local"), *SIZES[size], f"engine.pipelined={str(pipelined).lower()}",
           f"out_dir={out}", "quality.enabled=false", *extra]
    # The summary carries the orchestrating process's own peak RSS (vLLM's core is another process).
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:   # reported in the table; the other rows still get measured
        (out / "benchmark-error.log").write_text(p.stderr)
        last = [x for x in p.stderr.splitlines() if x.startswith("[glan-local]")][-1:]
        return {"error": (last[0] if last else f"exit {p.returncode}")[:160]}
    return json.loads((out / "summary.json").read_text())


def needed_replies(out: Path) -> list[dict]:
    """The run's stored replies that its outputs needed, in the order they were stored: per ask,
    every attempt up to the first valid one. Speculative attempts found unneeded are left out:
    the raw replay is the ideal for the work the dataset needed, not for work thrown away."""
    from glan_local.seeds import derive_seed

    run_seed = json.loads((out / "manifest.json").read_text())["seed"]
    db = sqlite3.connect(out / "store.sqlite")
    rows = [dict(zip(("key", "level", "node", "attempt", "seed", "status", "elapsed_s", "messages", "request"), r))
            for r in db.execute("SELECT key, level, node, attempt, seed, status, elapsed_s, messages, request "
                                "FROM replies ORDER BY created")]
    first_ok: dict = {}
    for r in rows:   # which ask of its node a reply answers: the one whose derived seed it carries
        r["ask"] = next(i for i in range(100_000) if derive_seed(run_seed, r["level"], r["node"], i, r["attempt"]) == r["seed"])
        if r["status"] == "ok":
            k = (r["level"], r["node"], r["ask"])
            first_ok[k] = min(first_ok.get(k, r["attempt"]), r["attempt"])
    return [r for r in rows if r["attempt"] <= first_ok.get((r["level"], r["node"], r["ask"]), 10**9)]


def stored_requests(out: Path) -> list[dict]:
    return [{"key": r["key"], "level": r["level"], "messages": json.loads(r["messages"]), **json.loads(r["request"])}
            for r in needed_replies(out)]


def critical_path_s(out: Path) -> float:
    """Seconds along the run's longest chain of needed replies that wait for one another: a
    node's requests start when its parent node is complete. Retries are counted as if every
    attempt of an ask ran at once (the slowest needed attempt), so this is a lower bound for
    ANY schedule that respects the tree, speculative retries included, at the speed the replies
    actually ran. (Per node, the slowest ask counts: subjects' queries run side by side.)"""
    took: dict = {}
    for r in needed_replies(out):
        key = (r["level"], r["node"])
        took[key] = max(took.get(key, 0.0), r["elapsed_s"])
    order = ["taxonomy", "subjects", "syllabus", "questions", "answers", "judge"]

    def parent(level: str, node: str):
        if level == "taxonomy":
            return None if node == "root" else ("taxonomy", node.rpartition(".")[0] or "root")
        prev = order[order.index(level) - 1]
        return (prev, node) if level in ("answers", "judge") else (prev, node.rpartition(".")[0])

    done: dict = {}

    def finish(k) -> float:
        if k not in done:
            p = parent(*k)
            done[k] = (finish(p) if p in took else 0.0) + took[k]
        return done[k]

    return max((finish(k) for k in took), default=0.0)


RAW = r'''
import json, sys, time
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams
    spec = json.load(open(sys.argv[1]))
    backend = spec["backend"]
    llm = LLM(spec["model"], dtype=spec["dtype"], max_model_len=spec["max_model_len"], enforce_eager=True,
              gpu_memory_utilization=spec["gpu_memory_utilization"], enable_prefix_caching=True,
              max_num_seqs=spec["max_num_seqs"],
              structured_outputs_config={"backend": backend if backend != "none" else "xgrammar"},
              # as glan_local/engine.py: seeded requests crash vLLM on the CPU after a chunked prefill
              **({"enable_chunked_prefill": False} if spec["cpu"] else {}))
    tok = llm.get_tokenizer()
    reqs = spec["requests"]
    prompts = [tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in reqs]
    def params(r):
        s = r["sampling"]
        so = StructuredOutputsParams(json=r["schema"]) if (r["schema"] and backend != "none") else None
        return SamplingParams(temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
                              repetition_penalty=s["repetition_penalty"], seed=s["seed"], structured_outputs=so)
    compile_s = {}
    if backend != "none":
        # Compile time: the first request of each distinct schema alone, 1 token.
        seen = {}
        for r, p in zip(reqs, prompts):
            if r["schema"] and json.dumps(r["schema"], sort_keys=True) not in seen:
                seen[json.dumps(r["schema"], sort_keys=True)] = (r, p)
        for name, (r, p) in seen.items():
            sp = params(r); sp.max_tokens = 1
            t = time.perf_counter(); llm.generate([p], [sp], use_tqdm=False)
            compile_s[r["level"]] = round(max(compile_s.get(r["level"], 0), time.perf_counter() - t), 2)
    t = time.perf_counter()
    outs = llm.generate(prompts, [params(r) for r in reqs], use_tqdm=False)
    wall = time.perf_counter() - t
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    valid = 0
    for r, o in zip(reqs, outs):
        if o.outputs[0].finish_reason != "stop":
            continue
        if r["schema"] is None:
            valid += 1
            continue
        try:
            json.loads(o.outputs[0].text); valid += 1
        except ValueError:
            pass
    print("RESULT " + json.dumps({"tokens": tokens, "wall_s": wall, "requests": len(reqs), "valid": valid,
                                  "compile_s": compile_s}))
'''


def run_raw(requests: list[dict], backend: str, model_dir: str, cfg: dict, work: Path) -> dict:
    spec = work / f"raw-{backend}.json"
    from vllm.platforms import current_platform

    spec.write_text(json.dumps({"backend": backend, "model": model_dir, "requests": requests,
                                "cpu": current_platform.is_cpu(), **cfg}))
    script = work / "raw.py"
    script.write_text(RAW)
    p = subprocess.run([sys.executable, str(script), str(spec)], capture_output=True, text=True,
                       env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    (work / f"raw-{backend}.out").write_text(p.stdout + p.stderr)
    if line is None:
        raise SystemExit(f"raw replay ({backend}) failed:\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "benchmark")
    ap.add_argument("--skip-backends", action="store_true")
    ap.add_argument("--extra", nargs="*", default=[], help="more glan-local overrides for every pipeline run")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple] = []
    tps: dict = {}
    rss: dict = {}
    bounds: dict = {}
    for size in args.sizes:
        tag = f"{size}-{int(time.time())}"
        piped = run_pipeline(args.work / f"{tag}-pipelined", size, True, args.extra)
        level = run_pipeline(args.work / f"{tag}-levels", size, False, args.extra)
        if "error" in piped:    # the raw replay needs the pipelined run's requests
            rows.append((size, "pipeline", "-", "-", "-", "-", "-", "-", "-", "-", "-", piped["error"], "-"))
            continue
        model_dir = piped["model"]["path"]
        man = json.loads((args.work / f"{tag}-pipelined" / "manifest.json").read_text())["config"]["model"]
        cfg = {k: man[k] for k in ("dtype", "max_model_len", "gpu_memory_utilization", "max_num_seqs")}
        reqs = stored_requests(args.work / f"{tag}-pipelined")
        raw = run_raw(reqs, man_backend(args.work / f"{tag}-pipelined"), model_dir, cfg, args.work)
        ideal = raw["tokens"] / raw["wall_s"]
        for name, s in (("pipeline", piped), ("level-by-level", level)):
            if "error" in s:
                rows.append((size, name, "-", "-", "-", "-", "-", "-", "-", "-", "-", s["error"], "-"))
                continue
            t = s["totals"]
            # Useful tokens: those of the replies the dataset needed (speculative attempts found
            # unneeded are generated and thrown away: they cost time and count for nothing).
            useful = t["output_tokens"] - t["wasted_output_tokens"]
            outside = 1 - t["engine_step_s"] / t["generation_s"] if t["generation_s"] else 0.0
            chain_s = critical_path_s(Path(s["run_dir"]))
            chain = chain_s / t["generation_s"] if t["generation_s"] else 0.0
            if name == "pipeline":
                bounds[size] = (chain_s, raw["wall_s"])
            rows.append((size, name, t["generated"], useful, t["generation_s"], t["useful_output_tokens_per_s"],
                         round(t["useful_output_tokens_per_s"] / ideal, 2), t["mean_in_flight"],
                         f"{t['speculative']} ({t['wasted_output_tokens']:,})", f"{outside:.1%}",
                         f"{chain:.0%}", t.get("cached_prompt_tokens", "-"), t["peak_rss_mb"]))
            tps[(size, name)] = t["useful_output_tokens_per_s"]
            rss[size] = max(rss.get(size, 0), t["peak_rss_mb"])
        rows.append((size, "raw vLLM batch (ideal)", raw["requests"], raw["tokens"], round(raw["wall_s"], 1),
                     round(ideal, 1), 1.0, raw["requests"], "-", "-", "-", "-", "-"))
        if not args.skip_backends and size == args.sizes[0]:
            for backend in ("outlines", "xgrammar", "guidance", "none"):
                r = run_raw(reqs, backend, model_dir, cfg, args.work)
                rows.append((size, f"backend {backend}" if backend != "none" else "unconstrained", r["requests"],
                             r["tokens"], round(r["wall_s"], 1), round(r["tokens"] / r["wall_s"], 1),
                             round(r["tokens"] / r["wall_s"] / ideal, 2), r["requests"], "-", "-", "-",
                             f"valid {r['valid']}/{r['requests']}", json.dumps(r["compile_s"])))
    head = ("size", "what", "requests", "useful out tokens", "wall s", "useful tok/s", "vs raw", "mean in flight",
            "speculative (wasted tok)", "time outside engine", "dependency chain / wall", "cached prompt tok / valid",
            "peak RSS MB / compile s")
    table = [head, *rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for size in args.sizes:
        if (size, "pipeline") in tps and (size, "level-by-level") in tps:
            lines.append(f"\n{size}: pipelined / level-by-level throughput = "
                         f"{tps[(size, 'pipeline')] / tps[(size, 'level-by-level')]:.2f}")
    for size, (chain_s, raw_s) in bounds.items():
        lines.append(f"{size}: longest dependency chain {chain_s:.1f} s (retries overlapped), raw batch "
                     f"{raw_s:.1f} s: no schedule that respects the tree beats {raw_s / chain_s:.2f} x raw here")
    if len(args.sizes) > 1 and len(rss) > 1:
        a, b = args.sizes[0], args.sizes[-1]
        lines.append(f"peak orchestrator RSS {b} / {a} = {rss[b] / rss[a]:.2f}")
    print("\n".join(lines))
    (args.work / "benchmark.md").write_text("\n".join(lines) + "\n")


def man_backend(run: Path) -> str:
    return json.loads((run / "manifest.json").read_text())["engine_id"]["backend"]


if __name__ == "__main__":
    main()

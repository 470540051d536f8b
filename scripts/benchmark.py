#!/usr/bin/env python
"""Throughput benchmark: the pipeline against raw vLLM on the same requests, in one sitting.

    .venv/bin/python scripts/benchmark.py                 # tiny and small (~4x), all rows
    .venv/bin/python scripts/benchmark.py --sizes tiny --skip-backends
    .venv/bin/python scripts/benchmark.py --sweep 4 16    # a sweep in one engine vs separate processes
    .venv/bin/python scripts/benchmark.py --sweep 4-seeds # four jobs that share nothing

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
# wide: a tree more than ten GPU batches wide (conf/breadth/wide.yaml), for GPU sittings.
SIZES = {"tiny": ["breadth=tiny"], "small": ["breadth=small"], "wide": ["breadth=wide"]}


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
    rows = [dict(zip(("key", "level", "node", "attempt", "seed", "status", "elapsed_s", "request"), r))
            for r in db.execute("SELECT key, level, node, attempt, seed, status, elapsed_s, request "
                                "FROM replies ORDER BY created")]
    first_ok: dict = {}
    for r in rows:   # which ask of its node a reply answers: the one whose derived seed it carries
        r["ask"] = next(i for i in range(100_000) if derive_seed(run_seed, r["level"], r["node"], i, r["attempt"]) == r["seed"])
        if r["status"] == "ok":
            k = (r["level"], r["node"], r["ask"])
            first_ok[k] = min(first_ok.get(k, r["attempt"]), r["attempt"])
    return [r for r in rows if r["attempt"] <= first_ok.get((r["level"], r["node"], r["ask"]), 10**9)]


def stored_requests(out: Path) -> list[dict]:
    """The needed replies as requests: rendered messages, schema and sampling, from the store."""
    from glan_local.store import Store

    store = Store(out / "store.sqlite")
    try:
        reqs = []
        for r in needed_replies(out):
            asked = json.loads(r["request"])
            reqs.append({"key": r["key"], "level": r["level"], "messages": store.messages(r["key"]),
                         "schema": store.schema(asked["schema"]) if asked["schema"] else None,
                         "sampling": asked["sampling"]})
        return reqs
    finally:
        store.close()


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
    # The pipeline's own engine arguments (glan_local.engine.engine_kwargs) from its manifest's
    # config, so the comparison is fair on any hardware; only the backend may differ.
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
    from vllm.inputs.engine import tokens_input
    from glan_local.engine import engine_kwargs, prompt_token_ids
    from glan_local.config import GlanConfig
    from omegaconf import OmegaConf
    spec = json.load(open(sys.argv[1]))
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), spec["config"]))
    backend = spec["backend"]
    cfg.engine.backend = backend if backend != "none" else cfg.engine.backend
    kw = engine_kwargs(spec["model"], cfg.model, cfg.engine)
    if spec.get("kv"):
        kw["disable_log_stats"] = False     # vLLM's metrics, to read its KV-cache use while it runs
    llm = LLM(**kw)
    seats = cfg.model.max_num_seqs
    def kv_use():
        for m in llm.get_metrics():
            if m.name == "vllm:kv_cache_usage_perc":
                return float(m.value)
        return None
    kv = []
    tok = llm.get_tokenizer()
    core = llm.llm_engine
    reqs = spec["requests"]
    # The very token ids the pipeline sent (the same function): the same prompts, the same replies.
    prompts = [prompt_token_ids(tok, r["messages"]) for r in reqs]
    def params(r):
        s = r["sampling"]
        so = StructuredOutputsParams(json=r["schema"]) if (r["schema"] and backend != "none") else None
        return SamplingParams(temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
                              repetition_penalty=s["repetition_penalty"], seed=s["seed"], structured_outputs=so,
                              output_kind=RequestOutputKind.FINAL_ONLY)
    compile_s = {}
    if backend != "none":
        # Compile time: the first request of each distinct schema alone, 1 token.
        seen = {}
        for r, p in zip(reqs, prompts):
            if r["schema"] and json.dumps(r["schema"], sort_keys=True) not in seen:
                seen[json.dumps(r["schema"], sort_keys=True)] = (r, p)
        for name, (r, p) in seen.items():
            sp = params(r); sp.max_tokens = 1
            t = time.perf_counter(); llm.generate([{"prompt_token_ids": p}], [sp], use_tqdm=False)
            compile_s[r["level"]] = round(max(compile_s.get(r["level"], 0), time.perf_counter() - t), 2)
    # One batch, driven step by step as the pipeline drives it, to measure the same occupancy.
    t = time.perf_counter()
    for i, (r, p) in enumerate(zip(reqs, prompts)):
        core.add_request(str(i), tokens_input(p), params(r))
    outs, steps, seated, idle, left = {}, 0, 0.0, 0.0, len(reqs)
    while core.has_unfinished_requests():
        t0 = time.perf_counter()
        done = [o for o in core.step() if o.finished]
        dt = time.perf_counter() - t0
        steps += 1; seated += min(left, seats) / seats; idle += dt if left < seats else 0.0
        if spec.get("kv") and steps % 10 == 1:
            use = kv_use()
            if use is not None:
                kv.append(use)
        for o in done:
            outs[int(o.request_id)] = o
        left -= len(done)
    wall = time.perf_counter() - t
    outs = [outs[i] for i in range(len(reqs))]
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
                                  "compile_s": compile_s, "occupancy": seated / max(steps, 1),
                                  "queue_empty_share": idle / wall if wall else 0.0,
                                  **({"kv_mean": f"{sum(kv) / len(kv):.0%}", "kv_peak": f"{max(kv):.0%}"} if kv else {})}))
'''


def run_raw(requests: list[dict], backend: str, model_dir: str, config: dict, work: Path, kv: bool = False) -> dict:
    """kv: also sample vLLM's KV-cache use (its metrics on: a little slower)."""
    spec = work / f"raw-{backend}.json"
    spec.write_text(json.dumps({"backend": backend, "model": model_dir, "requests": requests, "config": config,
                                "kv": kv}))
    script = work / "raw.py"
    script.write_text(RAW)
    p = subprocess.run([sys.executable, str(script), str(spec)], capture_output=True, text=True,
                       env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    (work / f"raw-{backend}.out").write_text(p.stdout + p.stderr)
    if line is None:
        raise SystemExit(f"raw replay ({backend}) failed:\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


# --- sweeps: `glan-local -m` (one engine) against the same jobs as separate processes ---------------

# The tiny preset, its replies shorter where the small teacher loops (tests/e2e.py's max_tokens).
# In "4" and "16" the swept keys leave the taxonomy, subjects and syllabi the same in every job,
# as a real sweep over question and answer settings does: that shared chain is made once and
# stays as long as one job's. "4-seeds" shares nothing: four whole trees side by side.
SWEEP_BASE = ["breadth=tiny", "sampling.subjects.max_tokens=384", "sampling.syllabus.max_tokens=512",
              "sampling.questions.max_tokens=128", "sampling.answers.max_tokens=256", "quality.enabled=false"]
SWEEPS = {"4": ["seed=1", "breadth.questions_per_syllabus=1,2", "sampling.answers.temperature=0.3,0.7"],
          "16": ["seed=1", "breadth.questions_per_syllabus=1,2", "sampling.answers.temperature=0.2,0.4,0.6,0.8",
                 "sampling.questions.temperature=0.7,1.0"],
          "4-seeds": ["seed=1,2,3,4"]}


def measured(cmd: list[str]) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS in MB of the command's whole process tree: glan-local
    and vLLM's engine processes together, sampled every 0.25 s)."""
    import psutil

    import tempfile

    t = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0
        proc = psutil.Process(p.pid)
        while p.poll() is None:
            try:
                peak = max(peak, sum(q.memory_info().rss for q in [proc, *proc.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.25)
        if p.returncode != 0:
            err.seek(0)
            print(err.read()[-2000:], file=sys.stderr)
    return p.returncode, time.monotonic() - t, peak / 2**20


def jobs_of(sweep: list[str]) -> list[list[str]]:
    import itertools

    keys = [s.split("=", 1) for s in sweep]
    return [[f"{k}={v}" for k, v in zip((k for k, _ in keys), values)]
            for values in itertools.product(*(vals.split(",") for _, vals in keys))]


def bench_sweep(n: str, work: Path) -> list[tuple]:
    """One -m run of an n-job sweep, then the same jobs one after another as separate
    processes sharing one cache_dir, in this sitting."""
    tag = f"sweep{n}-{int(time.time())}"
    sweep_dir = work / tag / "sweep"
    code, wall, rss = measured([str(BIN / "glan-local"), "-m", *SWEEP_BASE, *SWEEPS[n], f"hydra.sweep.dir={sweep_dir}"])
    summaries = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    name = f"{len(jobs_of(SWEEPS[n]))} jobs" + (" (seeds)" if "seeds" in n else "")
    one = dict(what=f"{name}: one -m run (one engine)", jobs=len(summaries), exit=code, wall=wall, rss=rss,
               generated=sum(s["totals"]["generated"] for s in summaries),
               in_flight=summaries[0]["totals"]["mean_in_flight"] if summaries else 0.0)
    sep = dict(what=f"{name}: separate processes, one cache_dir", jobs=0, exit=0, wall=0.0, rss=0.0, generated=0,
               in_flight=0.0)
    flights = []
    for i, job in enumerate(jobs_of(SWEEPS[n])):
        out = work / tag / "separate" / str(i)
        code, w, r = measured([str(BIN / "glan-local"), *SWEEP_BASE, *job, f"out_dir={out}",
                               f"cache_dir={work / tag / 'cache'}"])
        s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
        sep.update(jobs=sep["jobs"] + (s is not None), exit=max(sep["exit"], code), wall=sep["wall"] + w,
                   rss=max(sep["rss"], r), generated=sep["generated"] + (s["totals"]["generated"] if s else 0))
        flights.append(s["totals"]["mean_in_flight"] if s else 0.0)
    sep["in_flight"] = sum(flights) / len(flights) if flights else 0.0
    alone = flights[0] if flights else 0.0       # the first job: a whole tree, nothing cached yet
    return [tuple(d[k] for k in ("what", "jobs", "exit", "wall", "generated", "in_flight", "rss")) + (
        round(d["wall"] / sep["wall"], 2) if sep["wall"] else "-", round(d["in_flight"] / alone, 1) if alone else "-")
        for d in (one, sep)]


def sweep_table(ns: list[str], work: Path) -> str:
    rows = [r for n in ns for r in bench_sweep(n, work)]
    head = ("what", "jobs ok", "exit", "wall s", "replies generated", "mean in flight", "peak RSS MB (tree)",
            "wall / separate", "in flight / one job alone")
    fmt = [head] + [(r[0], r[1], r[2], f"{r[3]:.0f}", r[4], f"{r[5]:.1f}", f"{r[6]:,.0f}", r[7], r[8]) for r in rows]
    widths = [max(len(str(r[i])) for r in fmt) for i in range(len(head))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in fmt]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "benchmark")
    ap.add_argument("--skip-backends", action="store_true")
    ap.add_argument("--extra", nargs="*", default=[], help="more glan-local overrides for every pipeline run")
    ap.add_argument("--sweep", nargs="+", choices=list(SWEEPS), metavar="N",
                    help="instead: tiny sweeps (4, 16 jobs sharing their top levels; 4-seeds: four whole "
                         "trees), one -m run against separate processes")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        table = sweep_table(args.sweep, args.work)
        print(table)
        (args.work / "sweep-benchmark.md").write_text(table + "\n")
        return
    rows: list[tuple] = []
    tps: dict = {}
    rss: dict = {}
    bounds: dict = {}
    for size in args.sizes:
        tag = f"{size}-{int(time.time())}"
        piped = run_pipeline(args.work / f"{tag}-pipelined", size, True, args.extra)
        level = run_pipeline(args.work / f"{tag}-levels", size, False, args.extra)
        if "error" in piped:    # the raw replay needs the pipelined run's requests
            rows.append((size, "pipeline", *["-"] * 12, piped["error"], "-"))
            continue
        model_dir = piped["model"]["path"]
        cfg = json.loads((args.work / f"{tag}-pipelined" / "manifest.json").read_text())["config"]
        reqs = stored_requests(args.work / f"{tag}-pipelined")
        raw = run_raw(reqs, man_backend(args.work / f"{tag}-pipelined"), model_dir, cfg, args.work)
        ideal = raw["tokens"] / raw["wall_s"]
        for name, s in (("pipeline", piped), ("level-by-level", level)):
            if "error" in s:
                rows.append((size, name, *["-"] * 12, s["error"], "-"))
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
            # The bound: no schedule that respects the tree beats raw wall / chain of the raw batch.
            bound = min(1.0, raw["wall_s"] / chain_s) if chain_s else 1.0
            vs_raw = t["useful_output_tokens_per_s"] / ideal
            rows.append((size, name, t["generated"], useful, t["generation_s"], t["useful_output_tokens_per_s"],
                         round(vs_raw, 2), round(vs_raw / bound, 2), t["mean_in_flight"],
                         t.get("occupancy", "-"), t.get("queue_empty_share", "-"),
                         f"{t['speculative']} ({t['wasted_output_tokens']:,})", f"{outside:.1%}",
                         f"{chain:.0%}", t.get("cached_prompt_tokens", "-"), t["peak_rss_mb"]))
            tps[(size, name)] = t["useful_output_tokens_per_s"]
            rss[size] = max(rss.get(size, 0), t["peak_rss_mb"])
        rows.append((size, "raw vLLM batch (ideal)", raw["requests"], raw["tokens"], round(raw["wall_s"], 1),
                     round(ideal, 1), 1.0, "-", raw["requests"], round(raw["occupancy"], 3),
                     round(raw["queue_empty_share"], 3), "-", "-", "-", "-", "-"))
        if not args.skip_backends and size == args.sizes[0]:
            for backend in ("outlines", "xgrammar", "guidance", "none"):
                r = run_raw(reqs, backend, model_dir, cfg, args.work)
                rows.append((size, f"backend {backend}" if backend != "none" else "unconstrained", r["requests"],
                             r["tokens"], round(r["wall_s"], 1), round(r["tokens"] / r["wall_s"], 1),
                             round(r["tokens"] / r["wall_s"] / ideal, 2), "-", r["requests"], "-", "-", "-", "-", "-",
                             f"valid {r['valid']}/{r['requests']}", json.dumps(r["compile_s"])))
    head = ("size", "what", "requests", "useful out tokens", "wall s", "useful tok/s", "vs raw", "vs bound",
            "mean in flight", "occupancy", "queue empty", "speculative (wasted tok)", "time outside engine", "dependency chain / wall", "cached prompt tok / valid",
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

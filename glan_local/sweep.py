"""Sweep summary: after `glan-local -m key=a,b ...`, one row per job in the sweep directory.

A Hydra callback (registered in conf/config.yaml under hydra.callbacks). When a job ends it
leaves `glan_job.json` (its number, overrides, run directory, status) in its Hydra job
directory and refreshes `<sweep dir>/sweep_summary.{json,md}`; at the end of the sweep the
table is written once more and printed. Refreshing per job matters: Hydra skips
`on_multirun_end` when a job failed, and a failed job must still get its row.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.experimental.callback import Callback

from .atomic import atomic_write_text

JOB_FILE = "glan_job.json"
COLUMNS = (("job", "job"), ("overrides", "overrides"), ("status", "status"), ("rows", "rows"),
           ("failed", "failed"), ("generated", "generated"), ("from_cache", "from cache"),
           ("output_tokens_per_s", "output tok/s"), ("wall_s", "wall s"))


def _write(path: Path, text: str) -> None:
    # Jobs on several nodes may write the sweep's files at once: a temporary name of each's own.
    atomic_write_text(path, text, shared=True)


def _is_multirun(config: Any) -> bool:
    mode = config.hydra.get("mode") if "hydra" in config else None
    return str(getattr(mode, "name", mode)) == "MULTIRUN"


def job_record(num: Any, overrides: list[str], run_dir: str, status: str, error: str = "") -> dict:
    return {"job": num, "overrides": list(overrides), "run_dir": run_dir, "status": status, "error": error}


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every Hydra job directory of the sweep (those with a .hydra/ folder or a job record)."""
    found = {p.parent for p in sweep_dir.rglob(JOB_FILE)} | {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    return sorted(found - {sweep_dir})


def _record(job_dir: Path, sweep_dir: Path) -> dict:
    p = job_dir / JOB_FILE
    if p.exists():
        return json.loads(p.read_text())
    ov = job_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(ov.read_text()) if ov.exists() else []
    rel = str(job_dir.relative_to(sweep_dir))
    return job_record(int(rel) if rel.isdigit() else rel, overrides or [], str(job_dir), "UNKNOWN",
                      "no job record: still running, or killed")


def summary_rows(sweep_dir: Path) -> list[dict]:
    """One row per job: its figures from the job's summary.json, or why there are none."""
    rows = []
    for job_dir in _job_dirs(sweep_dir):
        rec = _record(job_dir, sweep_dir)
        row: dict = {"job": rec["job"], "overrides": " ".join(rec["overrides"]), "run_dir": rec["run_dir"]}
        summary_path = Path(rec["run_dir"]) / "summary.json"
        if rec["status"] == "COMPLETED" and summary_path.exists():
            s = json.loads(summary_path.read_text())
            t = s.get("totals", {})
            row.update(status="ok", rows=s.get("rows"), failed=t.get("failed"), generated=t.get("generated"),
                       from_cache=t.get("from_cache"), output_tokens_per_s=t.get("output_tokens_per_s"),
                       wall_s=t.get("wall_s"))
        elif rec["status"] == "COMPLETED":
            row["status"] = f"no summary.json in {rec['run_dir']}"
        elif rec["status"] == "FAILED":
            row["status"] = f"FAILED: {rec.get('error') or 'see the job log'}"
        else:
            row["status"] = f"{rec['status']}: {rec.get('error', '')}".rstrip(": ")
        rows.append(row)
    return sorted(rows, key=lambda r: (not isinstance(r["job"], int), r["job"] if isinstance(r["job"], int) else 0,
                                       str(r["job"])))


def _cell(v: Any) -> str:
    return "-" if v is None or v == "" else str(v).replace("|", "\\|").replace("\n", " ")


def _swept(rows: list[dict]) -> list[dict]:
    """The table shows only the overrides that differ between jobs (the JSON keeps them all)."""
    common = set.intersection(*(set(r["overrides"].split()) for r in rows)) if len(rows) > 1 else set()
    return [{**r, "overrides": " ".join(o for o in r["overrides"].split() if o not in common)} for r in rows]


def markdown(rows: list[dict]) -> str:
    rows = _swept(rows)
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" if k in ("overrides", "status") else "---:" for k, _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def write_summary(sweep_dir: Path) -> list[dict]:
    rows = summary_rows(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write(sweep_dir / "sweep_summary.json", json.dumps({"sweep_dir": str(sweep_dir), "jobs": rows}, indent=2) + "\n")
    _write(sweep_dir / "sweep_summary.md", f"# Sweep {sweep_dir}\n\n" + markdown(rows))
    return rows


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.sweep_dir: Optional[Path] = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # Resolved once, here: ${now:...} in hydra.sweep.dir is cached from this first access.
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        hc = config.hydra
        job_dir = Path(str(hc.runtime.output_dir))
        status = getattr(job_return.status, "name", str(job_return.status))
        error = ""
        if status == "FAILED":
            e = getattr(job_return, "_return_value", None)
            error = f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e or "")
        run_dir = config.get("out_dir") or str(job_dir)
        # The job's own folder names it when hydra.sweep.subdir is not the job number (shard1):
        # a job submitted again alone is job 0 of its own sweep, but still shard1.
        sweep_dir = self.sweep_dir or Path(str(hc.sweep.dir))
        sub = str(job_dir.relative_to(sweep_dir)) if job_dir.is_relative_to(sweep_dir) else ""
        label = hc.job.get("num") if not sub or sub.isdigit() else sub
        rec = job_record(label, list(hc.overrides.task), str(run_dir), status, error)
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            _write(job_dir / JOB_FILE, json.dumps(rec, indent=1) + "\n")
            write_summary(self.sweep_dir or Path(str(hc.sweep.dir)))
        except OSError:
            pass   # a summary must never fail a job

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = self.sweep_dir or Path(str(config.hydra.sweep.dir))
        rows = write_summary(sweep_dir)
        print(f"\nsweep summary ({sweep_dir / 'sweep_summary.md'}):\n" + markdown(rows), flush=True)

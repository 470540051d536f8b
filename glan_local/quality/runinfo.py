"""What a run directory says about itself, for the card and the report: its summary, config,
command-line overrides and the upper levels (taxonomy, subjects, syllabi). Every piece is
optional, so a user's own JSONL (no run directory) gets a card and a report too."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml


@dataclass
class RunInfo:
    run_dir: Optional[Path] = None
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    overrides: Optional[list[str]] = None      # None: not started from the command line
    disciplines: list[dict] = field(default_factory=list)
    subjects: list[dict] = field(default_factory=list)
    syllabi: list[dict] = field(default_factory=list)


def _jsonl(p: Path) -> list[dict]:
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_run(run_dir: Optional[Path]) -> RunInfo:
    if run_dir is None:
        return RunInfo()
    info = RunInfo(run_dir=run_dir)
    if (run_dir / "summary.json").exists():
        info.summary = json.loads((run_dir / "summary.json").read_text())
    # run-config.json is the resolved typed config; .hydra/config.yaml is Hydra's copy of it.
    if (run_dir / "run-config.json").exists():
        info.config = json.loads((run_dir / "run-config.json").read_text()).get("config", {})
    elif (run_dir / ".hydra" / "config.yaml").exists():
        info.config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    if (run_dir / ".hydra" / "overrides.yaml").exists():
        info.overrides = [str(o) for o in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []]
    levels = run_dir / "levels"
    info.disciplines = _jsonl(levels / "taxonomy.jsonl")
    info.subjects = _jsonl(levels / "subjects.jsonl")
    # Only the session counts are needed: keep memory flat on paper-sized runs.
    info.syllabi = [{"id": s.get("id"), "discipline": s.get("discipline"),
                     "sessions": len((s.get("syllabus") or {}).get("sessions", []))}
                    for s in _jsonl(levels / "syllabus.jsonl")]
    return info

"""`glan-local-regen RUN_DIR ...`: re-ask only the bad replies of a finished run, with new settings.

The user picks what to redo: whole levels, failures by reason (cut at max_tokens, invalid,
backend error), pairs the judge scored below a threshold, rows the quality step removed for a
reason. Those asks are asked again under new attempt seeds (a round salt) with the sampling and
attempts given on the command line; every other request keeps its key and comes from the store.
A redone ask whose reply changes changes its children's prompts, so exactly the subtrees below
changed replies are generated anew. Earlier replies stay in the store.

Rounds are kept in RUN_DIR/regenerated.json, which every later walk of that directory applies
(resume, quality, verify through the manifest's copy): the directory's outputs are its config
plus its rounds (rounds.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Optional

from .errors import ConfigError
from .rounds import SAMPLING_KEYS, load

REASONS = {"cut": "cut at max_tokens", "invalid": "invalid", "backend": "backend error"}


def _jsonl(path: Path):
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        row = None
                    if not isinstance(row, dict):
                        raise ConfigError("run_dir", f"'{path}' line {n} is not a JSON record",
                                          "restore the file (glan-local-verify names what differs)")
                    yield row


def select(run_dir: Path, levels: list[str], reasons: list[str], judge_below: Optional[int],
           removed: list[str], redo: Optional[str], quality_dir: Path) -> tuple[list[list], list[str]]:
    """(explicit asks [level, node, ask], whole levels) picked by the user's criteria."""
    asks: list[list] = []
    if reasons:
        wanted = tuple(REASONS[r] for r in reasons)
        for f in _jsonl(run_dir / "levels" / "failures.jsonl"):
            if f["reason"].startswith(wanted) and (not levels or f["level"] in levels):
                asks.append([f["level"], f["node"], f["ask"]])
    if judge_below is not None:
        for row in _jsonl(run_dir / "levels" / "judge.jsonl"):
            scores = [row.get(f"judge_{k}") for k in ("clarity", "answerability", "correctness")]
            if any(s is not None and s < judge_below for s in scores):
                asks.append([redo or "answers", row["id"], 0])
    if removed:
        for gone in _jsonl(quality_dir / "quality" / "removed.jsonl"):
            if gone["reason"] in removed:
                asks.append([redo or "questions", gone["row"]["id"], 0])
    whole = list(levels) if levels and not (reasons or judge_below is not None or removed) else []
    return sorted({tuple(a): a for a in asks}.values()), whole


def _settings(overrides: list[str]) -> dict:
    """key=value overrides a redone ask takes: sampling.<level>.<key> and engine.max_attempts."""
    from .levels import NAMES as LEVELS

    out: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        try:
            if key == "engine.max_attempts":
                out["max_attempts"] = int(value)
                if out["max_attempts"] < 1:
                    raise ValueError
            elif len(parts) == 3 and parts[0] == "sampling" and parts[1] in LEVELS and parts[2] in SAMPLING_KEYS:
                out.setdefault("sampling", {}).setdefault(parts[1], {})[parts[2]] = \
                    int(value) if parts[2] == "max_tokens" else float(value)
            else:
                raise KeyError
        except (KeyError, ValueError):
            raise ConfigError(key or item, f"'{item}' is not a setting a redone request can take",
                              "give sampling.<level>.{temperature,top_p,max_tokens,repetition_penalty}=<number> "
                              "or engine.max_attempts=<n>; other changes need a new run") from None
        if not sep:
            raise ConfigError(item, "is not key=value", "write e.g. sampling.answers.max_tokens=1024")
    return out


def _usage_error(message: str) -> NoReturn:
    print(f"config error: glan-local-regen: {message}. Fix: see glan-local-regen --help", file=sys.stderr)
    sys.exit(2)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="glan-local-regen", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    words = lambda text: [w for w in text.split(",") if w]      # noqa: E731
    ap.add_argument("--level", type=words, default=[], help="levels, comma-separated; alone: every request of them")
    ap.add_argument("--reason", type=words, default=[],
                    help=f"failures of these reasons ({', '.join(REASONS)}; comma-separated), "
                         "from levels/failures.jsonl")
    ap.add_argument("--judge-below", type=int, help="pairs with a judge score below this (levels/judge.jsonl)")
    ap.add_argument("--removed", type=words, default=[],
                    help="rows the quality step removed for these reasons (comma-separated), e.g. wrong-language")
    ap.add_argument("--redo", choices=["questions", "answers"],
                    help="which request of a picked row to ask again (default: answers for --judge-below, "
                         "questions for --removed; a new question brings a new answer)")
    ap.add_argument("settings", nargs="*", metavar="key=value",
                    help="new settings of the redone requests: sampling.<level>.<key>=..., engine.max_attempts=...")
    ap.error = _usage_error  # type: ignore[method-assign]  # one line, exit 2, like every bad input
    args = ap.parse_intermixed_args(argv)
    from .cli import run_or_exit

    run_or_exit(lambda: _regen(args), str(args.run_dir))


def _regen(args) -> None:
    from .run import generate

    cfg, rounds = new_round(args.run_dir, args.level, args.reason, args.judge_below, args.removed, args.redo,
                            args.settings)
    r = rounds[-1]
    print(f"[glan-local-regen] round {r['round']}: "
          + (f"{len(r['asks'])} requests" if r["asks"]
             else f"every request of {', '.join(r['selected']['whole_levels'])}")
          + f" asked again with {json.dumps(r['settings']) if r['settings'] else 'the run settings'}", file=sys.stderr)
    generate(cfg, args.run_dir, rounds=rounds)


def new_round(run_dir: Path, levels: list[str], reasons: list[str], judge_below: Optional[int], removed: list[str],
              redo: Optional[str], overrides: list[str]) -> tuple[Any, list[dict]]:
    """The run's config and its rounds with a new one last: checked before any model loads."""
    from .config import from_container
    from .levels import NAMES as LEVELS
    from .manifest import Unreadable, read

    try:
        man = read(run_dir)
    except Unreadable as e:
        raise ConfigError("run_dir", str(e), "give the directory of a run that ended, as glan-local left it") from None
    if man is None:
        raise ConfigError("run_dir", f"'{run_dir}' has no manifest.json", "give the directory of a run that ended")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise ConfigError("--level", f"unknown level {bad[0]}", f"use one of {', '.join(LEVELS)}")
    bad = [r for r in reasons if r not in REASONS]
    if bad:
        raise ConfigError("--reason", f"unknown reason {bad[0]}", f"use one of {', '.join(REASONS)}")
    cfg = from_container(man["config"])
    rounds = load(run_dir).rounds
    settings = _settings(overrides)
    quality_dir = Path(cfg.quality.out_dir).expanduser() if cfg.quality.out_dir else run_dir / "publish"
    asks, whole = select(run_dir, levels, reasons, judge_below, removed, redo, quality_dir)
    if not asks and not whole:
        raise ConfigError("glan-local-regen", f"nothing in '{run_dir}' matches the selection",
                          "check levels/failures.jsonl, levels/judge.jsonl or publish/quality/removed.jsonl "
                          "for what the run has")
    # Numbered after every round the directory has (a merged run's carry their shards' numbers);
    # a shard's round applies to that shard's disciplines only, here and once merged.
    rounds.append({"round": max((r["round"] for r in rounds), default=0) + 1, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "selected": {"levels": levels, "reasons": reasons, "judge_below": judge_below,
                                "removed": removed, "redo": redo, "whole_levels": whole},
                   "settings": settings, "asks": asks,
                   **({"scope": {"index": cfg.shard.index, "count": cfg.shard.count}} if cfg.shard.count > 1 else {})})
    return cfg, rounds

if __name__ == "__main__":
    main()

"""`glan-local-quality INPUT [-o OUT] [key=value ...]`: the quality step on a run directory or on
any GLAN-style JSONL/parquet (question, answer, any provenance columns).

Options are the `quality:` keys of conf/config.yaml, given without the `quality.` prefix (it is
accepted too), e.g. `dedup.threshold=0.9 decontam.benchmarks=[gsm8k.jsonl]`. For a run
directory the run's own quality settings are the starting point.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ..config import ConfigError, QualityConfig
from .rows import is_run_dir
from .runinfo import read_run


def load_config(overrides: list[str], base: dict | None = None) -> QualityConfig:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(QualityConfig)
    dotlist = [o[len("quality."):] if o.startswith("quality.") else o for o in overrides]
    for o in dotlist:
        if "=" not in o:
            raise ConfigError(o, "is not key=value", "write options as e.g. dedup.threshold=0.9")
    try:
        merged = OmegaConf.merge(schema, base or {}, OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "quality"
        msg = str(e).strip().splitlines()[0]
        raise ConfigError(f"quality.{key}" if not str(key).startswith("quality") else key, msg,
                          "check the key and its type against the quality: block of conf/config.yaml")
    q = OmegaConf.to_object(merged)
    assert isinstance(q, QualityConfig)
    q.validate("quality")
    return q


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="glan-local-quality",
        description="Dedup, decontaminate, export (parquet + JSONL + dataset card) and report a GLAN dataset.",
        epilog="Options: quality keys as key=value, e.g. dedup.threshold=0.9 decontam.benchmarks=[b.jsonl] "
               "decontam.mode=flag language.mode=flag publish.heldout_per_discipline=50 publish.push_to_hub=me/my-glan "
               "report.embeddings=false")
    ap.add_argument("input", help="a glan-local run directory, or a JSONL/JSON/parquet file or folder")
    ap.add_argument("options", nargs="*", help="quality settings as key=value (see conf/config.yaml)")
    ap.add_argument("-o", "--out", help="output folder (default: <run>/publish, or <input>-publish)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the held-out draw (default: the run's, else 0)")
    ap.add_argument("--question-field", default="question", help="column holding the question (renamed to question)")
    ap.add_argument("--answer-field", default="answer", help="column holding the answer (renamed to answer)")
    ap.add_argument("--language", help="language the rows must be in, a name or ISO code (default: each row's "
                                       "language_code column, else the run's language); see language.* options")
    args = ap.parse_intermixed_args(argv)   # options may come before or after key=value settings
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")    # loading local files never needs the hub

    from .pipeline import preflight, run_quality

    src = Path(args.input).expanduser()
    try:
        if not src.exists():
            raise ConfigError("input", f"'{src}' does not exist", "give a run directory or a JSONL/parquet path")
        run = is_run_dir(src)
        run_cfg = read_run(src).config if run else {}
        q = load_config(args.options, run_cfg.get("quality"))
        seed = args.seed if args.seed is not None else int(run_cfg.get("seed") or 0)
        preflight(q)
        if args.language:
            from ..language import resolve

            try:
                resolve(args.language)
            except ConfigError as e:
                raise ConfigError("--language", f"'{args.language}' is not an ISO 639 language code",
                                  "use a code such as en, ko, hu, or a language name") from e
        out = Path(args.out) if args.out else (src / "publish" if run else src.with_name(src.stem + "-publish"))
        run_quality(q, out, run_dir=src if run else None, source=None if run else str(src), seed=seed,
                    say=lambda m: print(f"[glan-local-quality] {m}", file=sys.stderr, flush=True),
                    question_field=args.question_field, answer_field=args.answer_field, language=args.language,
                    command="glan-local-quality " + shlex.join(argv if argv is not None else sys.argv[1:]))
        if run:     # the manifest's hashes of what the quality step wrote, which verify checks
            from ..rundir import record_published

            record_published(src, out)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[glan-local-quality] stopped by SIGINT: the input is untouched; run the same command again",
              file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as e:
        print(f"glan-local-quality: cannot read the input: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 2
    except Exception as e:      # a damaged input of another kind: still one line, never a traceback
        if os.environ.get("GLAN_DEBUG") == "1":
            raise
        print(f"glan-local-quality: error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              "(GLAN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

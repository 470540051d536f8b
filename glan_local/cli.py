"""`glan-local`: the Hydra app. Thin: compose and check the config, then run the recipe."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import launcher
from .config import CannotProduce, ConfigError, from_container, register, resolved

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _run_name(model: str, breadth: str, overrides: str) -> str:
    """runs/<model>_<breadth>[_<overrides>]: the same command finds the same directory again.
    Overrides that do not change what is generated stay out of the name, so that changing
    them resumes the same run (identity.RUN_ONLY, and a teacher's capacity and placement; a
    teacher's path does name its directory)."""
    from .identity import MODEL_RUN_ONLY, RUN_ONLY

    skip = RUN_ONLY + tuple(f"{m}.{k}" for m in ("model", "answers.model") for k in MODEL_RUN_ONLY if k != "path")
    items = re.split(r",(?=[\w.+~]+=)", overrides) if overrides else []
    kept = [i for i in items if not any(i.lstrip("+~").split("=")[0] == k or
                                        i.lstrip("+~").startswith(k + ".") for k in skip)]
    name = "_".join([f"{model}_{breadth}"] + ([re.sub(r"[^\w.=,+-]", "_", ",".join(kept))] if kept else []))
    if len(name) > 120:   # file systems cap a name at 255 bytes: keep a readable head and a hash
        name = f"{name[:100]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


def _run_dir(out_dir, model: str, breadth: str, overrides: str) -> str:
    """hydra.run.dir: out_dir when given (so .hydra/ lands in the run directory), else runs/<name>."""
    return str(out_dir) if out_dir else f"runs/{_run_name(model, breadth, overrides)}"


def _sweep_name() -> str:
    """hydra.sweep.dir's name: the sweep's own overrides (a=1,2 b=3), read once where the sweep
    starts and cached (Hydra copies the cache into every job's config, Slurm's included), so
    that every job of one command, and the same command run again, land in one directory."""
    hc = HydraConfig.get()
    choices = hc.runtime.choices
    return _run_name(str(choices.get("model")), str(choices.get("breadth")), ",".join(hc.overrides.task))


def register_resolvers() -> None:
    for name, fn, cache in (("glan_run_name", _run_name, False), ("glan_run_dir", _run_dir, False),
                            ("glan_sweep_name", _sweep_name, True)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cache)


def hydra_files(task_cfg, hydra_cfg) -> dict[str, str]:
    """What Hydra writes into a job's .hydra/ (config.yaml, hydra.yaml, overrides.yaml), written
    by glan-local itself once the run directory is the run's (hydra.output_subdir is null: a
    refused command must not rewrite the .hydra/ of the run it names)."""
    return {"config.yaml": OmegaConf.to_yaml(task_cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task)}


def _job(container: dict, run_dir: str, files: dict[str, str]) -> None:
    from .run import generate

    generate(from_container(container), Path(run_dir), hydra_files=files)


class SweepJobFailed(Exception):
    """A sweep job ended with an error; its own one-line message is already printed above."""


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    run_dir = cfg.out_dir or HydraConfig.get().runtime.output_dir
    container = resolved(cfg)
    files = hydra_files(cfg, HydraConfig.get())
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        _sweep_job(container, run_dir, files)
        return
    _job_or_exit(container, run_dir, files)


def _sweep_job(container: dict, run_dir: str, files: dict[str, str]) -> None:
    """Each sweep job in a fresh interpreter (hydra/launcher=basic or slurm): vLLM frees its
    engine only when its process exits, and a multiprocessing child skips the exit hooks vLLM
    relies on to stop its core."""
    script = "import sys; from glan_local.cli import job_main; job_main(sys.argv[1])"
    p = subprocess.Popen([sys.executable, "-c", script, run_dir], stdin=subprocess.PIPE, text=True)
    assert p.stdin is not None
    p.stdin.write(json.dumps({"config": container, "hydra_files": files}))
    p.stdin.close()
    # SIGTERM (a scheduler's stop) and SIGUSR2 (Slurm's warning before the time limit) are
    # passed on so the job stops gracefully; Ctrl-C reaches the job directly (same process
    # group), so here it only waits for the job to finish stopping.
    got: list[int] = []

    def forward(signum, frame):
        got.append(signum)
        p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        while True:
            try:
                exit_code = p.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    launcher_handler = previous[signal.SIGUSR2]
    if signal.SIGUSR2 in got and callable(launcher_handler):
        # The job stopped cleanly, everything stored: now the launcher's own handler runs
        # (submitit: requeue the job, up to hydra.launcher.max_num_timeout times).
        launcher_handler(signal.SIGUSR2, None)
    if exit_code == 130:
        sys.exit(130)       # stopped: the rest of the sweep does not start
    if exit_code != 0:
        raise SweepJobFailed(f"[glan-local] sweep job in {run_dir} failed (exit {exit_code}); its one-line error "
                             "is printed "
                             "above")


def job_main(run_dir: str) -> None:
    """Entry of a sweep job's own process: the resolved config arrives on stdin."""
    register()
    given = json.loads(sys.stdin.read())
    _job_or_exit(given["config"], run_dir, given["hydra_files"])


def _debug() -> bool:
    return os.environ.get("GLAN_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _job_or_exit(container: dict, run_dir: str, files: dict[str, str]) -> None:
    # Exit here: past this point Hydra would add its own multi-line report.
    run_or_exit(lambda: _job(container, run_dir, files), run_dir)


def run_or_exit(job, run_dir: str) -> None:
    """One line, never a traceback (GLAN_DEBUG=1 shows it): exit 2 for bad input, 3 when the
    teacher or backend cannot produce what was asked, 1 for a fault, 130 when stopped."""
    from .stop import Interrupted

    try:
        job()
    except Interrupted as e:
        print(f"[glan-local] {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:   # Ctrl-C while the teacher loads or while the outputs are written
        print(f"[glan-local] stopped by SIGINT: every reply generated so far is saved in "
              f"{Path(run_dir) / 'store.sqlite'}; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if _debug():
            raise
        code, line = job_error_line(e, run_dir)
        print(line, file=sys.stderr)
        sys.exit(code)


def job_error_line(e: BaseException, run_dir: str) -> tuple[int, str]:
    """Exit code and one line for what stopped a job. Bad input is said whole in its line;
    anything else ends with where its story is (the run's glan.log), when it has one."""
    from .logs import details

    code, line = _job_error(e, run_dir)
    return code, line + (details(run_dir) if code != 2 else "")


def _job_error(e: BaseException, run_dir: str) -> tuple[int, str]:
    """Exit code and one line for what stopped a job."""
    if isinstance(e, ConfigError):
        return 2, str(e)
    if isinstance(e, CannotProduce):
        return 3, f"[glan-local] {e}"
    if isinstance(e, OmegaConfBaseException):     # e.g. +new_key=... that the schema lacks
        return 2, _describe(e)
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            (isinstance(e, sqlite3.OperationalError) and "full" in str(e)):
        where = getattr(e, "filename", None) or (
            Path(run_dir) / "store.sqlite" if isinstance(e, sqlite3.Error) else run_dir)
        return 1, (f"[glan-local] disk full while writing {where}: free space and run the same command again "
                   "to resume (every reply stored so far is kept)")
    if isinstance(e, OSError):
        return 1, (f"[glan-local] error: cannot use {e.filename or run_dir} ({e.strerror or e}): fix the path or "
                   "its permissions, then run the same command again to resume")
    text = " ".join(str(e).split())[:300] or "no message"
    return 1, (f"[glan-local] error: {type(e).__name__}: {text} (GLAN_DEBUG=1 shows the traceback); "
               "run the same command again to resume from the stored replies")


def _one_line_errors(func):
    """Replaces Hydra's multi-line error report: one line naming the culprit, exit 2.
    GLAN_DEBUG=1 (or HYDRA_FULL_ERROR=1) shows the traceback instead."""
    from .launcher import SweepFailed, SweepStopped

    try:
        return func()
    except (SweepJobFailed, SweepFailed) as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    except SweepStopped as e:
        print(e, file=sys.stderr)
        sys.exit(130)
    except OSError as e:      # Hydra makes the run directory (out_dir) before glan-local runs
        if _debug() or not e.filename:     # Hydra's own missing config is an OSError too
            _exit_described(e)
        print(f"config error: out_dir: cannot make the run directory '{e.filename}' ({e.strerror}). Fix: choose a "
              "writable directory with out_dir=<path>", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        _exit_described(e)


def _exit_described(e: Exception) -> None:
    if _debug():
        raise e
    slurm = _slurm_job_ended(e)
    print(slurm or _describe(e), file=sys.stderr)
    sys.exit(1 if slurm else 2)


def _slurm_job_ended(e: Exception) -> str:
    """A Slurm job (hydra/launcher=slurm) that ended without a result: cancelled, timed out,
    failed. Its stored replies are kept; the same command (with only that job's overrides)
    resumes it."""
    name = type(e).__name__
    if name not in ("UncompletedJobError", "FailedJobError") or "submitit" not in type(e).__module__:
        return ""
    first = " ".join(str(e).split())[:240]
    return (f"[glan-local] a Slurm job ended without a result ({first}); what it stored is kept: submit the "
            "same command again, with only that job's sweep values (e.g. shard.index=1), to resume it")


_FIXES = (
    ("Could not override", "check the key's spelling; `glan-local --cfg job` lists every key"),
    ("not in '", "check the key's spelling; `glan-local --cfg job` lists every key"),
    ("could not be converted", "give a value of the key's type"),
    ("is not a ListConfig", "give a list, e.g. 'taxonomy.include=[Chemistry, \"*Engineering*\"]'"),
    ("Invalid value", "use one of the listed values"),
    ("Could not find", "use one of the listed options, or add a YAML file to that conf/ group"),
    ("Could not append", "the key exists already: drop the leading +"),
)


def _describe(e: BaseException) -> str:
    """Hydra/OmegaConf errors are several lines long; keep the culprit and say what to do."""
    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, OverrideParseException):
        why = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip() and "hydra.cc" not in line)
        why = why or str(e).strip().splitlines()[0]
        return (f"config error: cannot parse the override '{e.override}' ({why}). Fix: write key=value, and quote "
                "a value with brackets, commas or spaces, e.g. 'taxonomy.include=[Chemistry, Physics]'")
    cause = e.__cause__
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    detail = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    if "Could not find" in first:   # the options list follows on the next lines
        first = " ".join(str(e).split("Config search path")[0].split())
    key = getattr(cause, "full_key", None) or getattr(e, "full_key", None)
    fix = next((f for pat, f in _FIXES if pat in first or pat in detail), "see `glan-local --help`")
    msg = f"{first} ({detail})" if detail and detail not in first else first
    return f"config error: {key + ': ' if key else ''}{msg}. Fix: {fix}"


def main() -> None:
    from hydra._internal import utils as hydra_utils

    register()
    register_resolvers()
    launcher.register()
    hydra_utils.run_and_report = _one_line_errors
    app()


if __name__ == "__main__":
    main()

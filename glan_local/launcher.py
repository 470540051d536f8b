"""glan-local's own Hydra launcher, the default for `glan-local -m`: every job of a sweep in this
process, walked together through one engine per teacher (forest.py).

Each job gets what a Hydra job gets from Hydra's own launchers: its config composed by Hydra
(the sweeper and overrides as users know them), its number, its directory with .hydra/
(config.yaml, hydra.yaml, overrides.yaml), the callbacks' on_job_start and on_job_end (so its
row in sweep_summary). Hydra's run_job does all that around one task function call; here the
same steps come before and after the forest, since the jobs run side by side.

A job whose config is bad is refused before any engine starts, in one line naming it; a job
that fails while running stops alone; the sweep then ends with exit 1 naming every failed job.
hydra/launcher=basic keeps one process per job, one after another; hydra/launcher=slurm one
Slurm job per sweep job.
"""
from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from . import sweep
from .stop import stop_on_signals

log = logging.getLogger(__name__)


class SweepFailed(Exception):
    """Jobs of a sweep failed (each said why in its own line above): one line naming them."""


class SweepStopped(Exception):
    """Ctrl-C, SIGTERM or Slurm's SIGUSR2 stopped the sweep: every job's replies are stored."""


@dataclass
class _Launched:
    config: DictConfig               # the job's whole config, hydra node included
    task_cfg: DictConfig             # without the hydra node: what a task function gets
    container: dict                  # task_cfg resolved: the job's GlanConfig once validated
    job: Any                         # forest.Job


class GlanLauncher(Launcher):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        from .config import ConfigError, from_container
        from .forest import run_forest

        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        launched = []
        for n, overrides in enumerate(job_overrides):
            idx = initial_job_idx + n
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = idx
                config.hydra.job.num = idx
            launched.append(self._begin(config, idx, list(filter_overrides(overrides))))
        # A job is named by what sets it apart: the overrides not every job of the sweep shares.
        shared = set.intersection(*(set(item.job.overrides) for item in launched)) if len(launched) > 1 else set()
        for item in launched:
            item.job.overrides = [o for o in item.job.overrides if o not in shared]
        refused = []
        for item in launched:           # bad config: refused before any engine starts
            try:
                item.job.cfg = from_container(item.container)
            except ConfigError as e:
                item.job.error = e
                refused.append(item.job)
        self._say_failed(refused)
        got = stop_on_signals()
        try:
            run_forest([item.job for item in launched if item.job.error is None])
        except KeyboardInterrupt:
            raise SweepStopped(f"[glan-local] sweep stopped by {got.get('signal', 'SIGINT')}: every job's replies "
                               "so far are stored in its run directory; run the same command again to resume") from None
        returns = [self._end(item) for item in launched]
        failed = [item.job for item in launched if item.job.error is not None]
        if failed:
            self._say_failed([job for job in failed if job not in refused])
            rows = sweep.write_summary(Path(str(self.config.hydra.sweep.dir)))
            print(f"\nsweep summary ({Path(str(self.config.hydra.sweep.dir)) / 'sweep_summary.md'}):\n"
                  + sweep.markdown(rows), flush=True)
            raise SweepFailed(f"[glan-local] {len(failed)} of {len(launched)} sweep jobs failed: "
                              + "; ".join(f"{j.label} ({' '.join(j.overrides) or 'no overrides'})" for j in failed)
                              + ". Fix what each job's line above names and run the same command again: the "
                              "jobs that ended resume with nothing generated")
        return returns

    def _begin(self, config: DictConfig, idx: int, overrides: list[str]) -> _Launched:
        """What Hydra's run_job does before the task function: the output directory, .hydra/,
        on_job_start; then the job's resolved config, as the task function would read it."""
        assert self.hydra_context is not None
        HydraConfig.instance().set_config(config)
        output_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        HydraConfig.instance().set_config(config)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        # The job's own directory under the sweep's gets .hydra/ whatever becomes of the job: it is
        # the sweep's (a run directory elsewhere, out_dir=, is written only by its run).
        from .cli import hydra_files

        hydra_output = Path(output_dir) / ".hydra"
        hydra_output.mkdir(parents=True, exist_ok=True)
        for name, text in hydra_files(task_cfg, config.hydra).items():
            (hydra_output / name).write_text(text, encoding="utf-8")
        assert self.task_function is not None
        self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
        from .config import resolved
        from .forest import Job

        container = resolved(task_cfg)
        run_dir = Path(str(container.get("out_dir") or config.hydra.runtime.output_dir))
        return _Launched(config, task_cfg, container, Job(f"job {idx}", overrides, None, run_dir))

    def _end(self, item: _Launched) -> JobReturn:
        """What Hydra's run_job does after the task function: the JobReturn, on_job_end."""
        assert self.hydra_context is not None
        config, job = item.config, item.job
        HydraConfig.instance().set_config(config)
        ret = JobReturn()
        ret.cfg = item.task_cfg
        ret.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)     # type: ignore[assignment]
        ret.overrides = list(OmegaConf.to_container(config.hydra.overrides.task))       # type: ignore[arg-type]
        ret.working_dir = os.getcwd()
        ret.task_name = str(config.hydra.job.name)
        if job.error is None:
            ret.status, ret.return_value = JobStatus.COMPLETED, job.summary
        else:
            ret.status, ret.return_value = JobStatus.FAILED, job.error
        self.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
        return ret

    @staticmethod
    def _say_failed(failed: list) -> None:
        from .cli import job_error_line

        for job in failed:
            _, line = job_error_line(job.error, str(job.run_dir))
            print(f"[glan-local] {job.label} ({' '.join(job.overrides) or 'no overrides'}): "
                  f"{line.removeprefix('[glan-local] ')}", flush=True, file=sys.stderr)


# Hydra instantiates launchers from its hydra_plugins package only: this one is registered under
# that name (conf/hydra/launcher/glan.yaml names it so) by register(), before Hydra starts.
PLUGIN_MODULE = "hydra_plugins.glan_local"
GlanLauncher.__module__ = PLUGIN_MODULE


def register() -> None:
    from hydra.core.plugins import Plugins

    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])
    Plugins.instance()._register(GlanLauncher)

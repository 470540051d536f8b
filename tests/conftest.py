import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def _log_env() -> dict:
    from glan_local.progress import QUIET_VARS

    return {k: os.environ.get(k) for k in QUIET_VARS}


_LOG_ENV = _log_env()   # as the session started, before any fixture ran a config in this process


@pytest.fixture(autouse=True)
def _no_leaked_log_levels():
    """A run in this process (a test's or a module fixture's) sets vLLM's log level and the like
    for the processes it starts; left in os.environ, a later test's subprocess would inherit
    verbose=false's ERROR. Put back as the session started, before and after every test."""
    def restore():
        for k, v in _LOG_ENV.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    restore()
    yield
    restore()


@pytest.fixture
def compose():
    """Compose the real conf/ with overrides, as the CLI would, into a typed GlanConfig."""
    from hydra import compose as hcompose, initialize_config_dir
    from omegaconf import OmegaConf

    from glan_local.cli import register_resolvers
    from glan_local.config import GlanConfig, register

    register()
    register_resolvers()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hcompose(config_name="config", overrides=list(overrides))
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), cfg))

    return _compose


@pytest.fixture
def fake_model(tmp_path):
    """A folder that passes the model checks, for runs with the FAKE engine (nothing loads it)."""
    d = tmp_path / "fake-model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"0")
    (d / "chat_template.jinja").write_text("{{ messages }}")
    return d


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted tiny run with the REAL engine, shared by the end-to-end tests."""
    from e2e import run_glan

    out = tmp_path_factory.mktemp("e2e") / "run"
    return out, run_glan(out)

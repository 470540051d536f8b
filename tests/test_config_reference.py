"""docs/configuration.md cannot drift: it is what scripts/config_reference.py generates from the
config classes, and every key the YAML files in conf/ set is a documented field."""
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import config_reference  # noqa: E402


def test_the_committed_page_is_what_the_code_generates():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def _keys(node, prefix=""):
    for k, v in node.items():
        if k.startswith("_") or k in ("defaults", "hydra"):
            continue
        key = f"{prefix}{k}"
        yield key
        if isinstance(v, dict) and key not in ("model.extra", "answers.model.extra"):
            yield from _keys(v, f"{key}.")


def test_every_key_in_conf_is_a_documented_field():
    documented = config_reference.documented_keys()
    groups = {"model": "model", "breadth": "breadth", "sampling": "sampling", "platform": "platform"}
    found = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        rel = path.relative_to(ROOT / "conf")
        if rel.parts[0] == "hydra":
            continue
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        package = next((line.split("@package", 1)[1].strip() for line in text.splitlines()[:3] if "@package" in line),
                       None)
        prefix = "" if len(rel.parts) == 1 or package == "_global_" else f"{package or groups[rel.parts[0]]}."
        found += [(str(rel), k) for k in _keys(data, prefix)]
    assert found and {k for _, k in found} >= {"model.name", "breadth.fields", "sampling.answers.temperature"}
    missing = [(f, k) for f, k in found if k not in documented]
    assert not missing, f"keys in conf/ with no documented field: {missing}"


def test_every_field_has_its_meaning():
    docs = config_reference.field_docs()
    import dataclasses

    from glan_local import config

    import typing

    def section(t) -> bool:     # a nested section is documented by its class's docstring
        return dataclasses.is_dataclass(t) or any(dataclasses.is_dataclass(a) for a in typing.get_args(t))

    bare = [f"{cls.__name__}.{f.name}" for cls in vars(config).values()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == config.__name__
            and cls not in (config.LevelSampling, config.PromptsConfig)
            for f in dataclasses.fields(cls)
            if not section(typing.get_type_hints(cls, vars(config))[f.name]) and f.name not in docs.get(cls.__name__, {})]
    assert not bare, f"fields without their one-line meaning: {bare}"

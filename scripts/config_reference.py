#!/usr/bin/env python
"""docs/configuration.md, generated from the config classes (glan_local/config.py): every key,
its type, its default and its one-line meaning (the docstring under each field).

    .venv/bin/python scripts/config_reference.py            # rewrite docs/configuration.md
    .venv/bin/python scripts/config_reference.py --check    # exit 1 when the page is stale

tests/test_config_reference.py fails when the committed page and the code disagree, or when a
key in conf/ has no documented field.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAGE = ROOT / "docs" / "configuration.md"

from glan_local import config  # noqa: E402
from glan_local.levels import NAMES as LEVELS  # noqa: E402

HEAD = """# Configuration reference

Generated from `glan_local/config.py` by `scripts/config_reference.py` (do not edit by hand; a
test fails when this page and the code disagree). Every key is set on the command line
(`glan-local breadth.fields=4 engine.backend=xgrammar`); `glan-local --cfg job` prints the whole
resolved config. The defaults below are the schema's: the presets in `conf/` (`platform/`,
`model/`, `sampling/`, `breadth/`) set some of them for a run, e.g. `breadth=tiny` (the default
preset) and `sampling=paper`.
"""


def field_docs() -> dict[str, dict[str, str]]:
    """class name -> field -> the string literal right under the field (attribute docstrings)."""
    tree = ast.parse(inspect.getsource(config))
    out: dict[str, dict[str, str]] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        docs: dict[str, str] = {}
        body = cls.body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
        out[cls.name] = docs
    return out


def _type(t: typing.Any) -> str:
    text = str(t).replace("typing.", "")
    return text.replace("Optional[", "").rstrip("]") + " or null" if "Optional[" in text else text


def _cell(text: str) -> str:
    """Text in a table cell: no | (a column break) and no <...> (read as an HTML tag)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
    else:
        return "-"
    if isinstance(v, enum.Enum):
        v = v.value
    if dataclasses.is_dataclass(v):
        return "(section)"
    return "`null`" if v is None else f"`{str(v).lower() if isinstance(v, bool) else v}`"


def rows(cls: type, prefix: str, docs: dict[str, dict[str, str]], out: list[str], sections: list) -> None:
    hints = typing.get_type_hints(cls, vars(config))
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        t = hints[f.name]
        inner = [a for a in typing.get_args(t) if a is not type(None)]
        sub = t if dataclasses.is_dataclass(t) else inner[0] if inner and dataclasses.is_dataclass(inner[0]) else None
        if sub is not None:
            sections.append((key, sub, docs.get(cls.__name__, {}).get(f.name, "")))
            continue
        bar = " \\| "      # a | inside a table cell
        choices = f" ({bar.join(m.value for m in t)})" if isinstance(t, type) and issubclass(t, enum.Enum) else ""
        name = t.__name__ if isinstance(t, type) else _type(t)
        out.append(f"| `{key}` | {name}{choices} | {_default(f)} | {_cell(docs.get(cls.__name__, {}).get(f.name, ''))} |")


def render() -> str:
    docs = field_docs()
    parts = [HEAD]
    sections: list = [("", config.GlanConfig, "")]
    while sections:
        prefix, cls, doc = sections.pop(0)
        if cls is config.LevelSampling:        # one block per level: written once, for sampling.<level>
            table: list[str] = []
            rows(config.SamplingConfig, "sampling.<level>.", docs, table, [])
            parts.append(f"## `sampling.<level>`\n\n{' '.join((config.SamplingConfig.__doc__ or '').split())} "
                         f"`<level>` is one of {', '.join(f'`{n}`' for n in LEVELS)}.\n\n"
                         "| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(table) + "\n")
            continue
        if cls is config.PromptsConfig:
            parts.append(f"## `prompts.<name>`\n\n{' '.join((cls.__doc__ or '').split())} `<name>` is one of "
                         f"{', '.join(f'`{n}`' for n in ('system',) + LEVELS)}; default `null`: `prompts/<name>.j2`. "
                         "The variables each template gets: [taxonomy-and-prompts.md](taxonomy-and-prompts.md).\n")
            continue
        table = []
        nested: list = []
        rows(cls, f"{prefix}." if prefix else "", docs, table, nested)
        title = f"`{prefix}`" if prefix else "Top level"
        about = _cell(doc or " ".join((cls.__doc__ or "").split()))
        parts.append(f"## {title}\n\n{about}\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
                     + "\n".join(table) + "\n")
        sections = nested + sections
    return "\n".join(parts)


def documented_keys() -> set[str]:
    """Every dotted key the page documents (sampling.<level> and prompts.<name> expanded)."""
    keys: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls, vars(config))
        docs = field_docs()
        for f in dataclasses.fields(cls):
            t = hints[f.name]
            inner = [a for a in typing.get_args(t) if a is not type(None)]
            sub = t if dataclasses.is_dataclass(t) else inner[0] if inner and dataclasses.is_dataclass(inner[0]) \
                else None
            if sub is not None:
                keys.add(prefix + f.name)
                walk(sub, f"{prefix}{f.name}.")
            elif docs.get(cls.__name__, {}).get(f.name) or cls is config.PromptsConfig:
                keys.add(prefix + f.name)

    walk(config.GlanConfig, "")
    for level in LEVELS:
        keys |= {f"sampling.{level}.{f.name}" for f in dataclasses.fields(config.SamplingConfig)}
    return keys


if __name__ == "__main__":
    page = render()
    if "--check" in sys.argv:
        same = PAGE.exists() and PAGE.read_text() == page
        print("docs/configuration.md is up to date" if same else
              "docs/configuration.md is stale: run .venv/bin/python scripts/config_reference.py")
        sys.exit(0 if same else 1)
    PAGE.write_text(page)
    print(f"wrote {PAGE}")

"""Level 1, taxonomy: fields -> sub-fields -> disciplines, generated or read from a file.

The generated taxonomy is saved as an editable taxonomy.yaml (same format `load` reads), which
is the paper's human-verification step: prune or edit it, then start from it. A flat list of
disciplines (a .txt file, one per line) works too: field and sub-field are "unspecified", or
inferred by the teacher with taxonomy.infer_parents=true. taxonomy.include/exclude (globs on
field, sub-field, discipline or "field/sub-field/discipline") keep a subset.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import yaml
from pydantic import BaseModel, Field, create_model, field_validator

from ..atomic import atomic_write_text
from ..errors import ConfigError
from .base import Ask, Context, Node, Outcome, Text, name_part, normal_name

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import GlanConfig

name = "taxonomy"
# The variables its template gets (besides `language`); checked when the run starts.
VARIABLES = frozenset({"depth", "count", "field", "subfield", "discipline"})
CONTEXT_FROM: tuple = ()   # earlier levels whose replies this level's prompt embeds
TEACHER = "model"
UNSPECIFIED = "unspecified"
# Sanity bounds on a taxonomy file, checked before it is parsed or planned: the paper's taxonomy
# has ~130 disciplines, so a file past these is a wrong file, not a plan.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_DISCIPLINES = 100_000


class Parents(BaseModel):
    field: Text
    subfield: Text


@cache
def schema(count: int) -> type[BaseModel]:
    model = create_model(
        f"Names{count}",
        names=(list[Text], Field(min_length=count, max_length=count)),
        __validators__={"distinct": field_validator("names")(_distinct)},
    )
    return model


def _distinct(cls, v: list[str]) -> list[str]:
    if len({normal_name(x) for x in v}) != len(v):
        raise ValueError("names repeat")
    return v


def _count(depth: str, cfg) -> int:
    b = cfg.breadth
    return {"field": b.fields, "subfield": b.subfields_per_field, "discipline": b.disciplines_per_subfield}[depth]


def enabled(cfg: GlanConfig) -> bool:
    return True


def plan(cfg: GlanConfig, roots: Optional[list[Node]] = None) -> tuple[dict[int, int], int, str]:
    """(asks per depth of the taxonomy tree, disciplines, where they come from). roots: this
    run's root nodes from taxonomy.file (after include/exclude and shard), or None for a
    generated taxonomy: its root asks for fields, each field for sub-fields, each sub-field
    for disciplines. A flat list's disciplines each ask for their parents (at depth 3)."""
    b = cfg.breadth
    if roots is None:
        source = (f"breadth.fields={b.fields} x breadth.subfields_per_field={b.subfields_per_field} x "
                  f"breadth.disciplines_per_subfield={b.disciplines_per_subfield}")
        return ({0: 1, 1: b.fields, 2: b.fields * b.subfields_per_field},
                b.fields * b.subfields_per_field * b.disciplines_per_subfield, source)
    return {3: sum(1 for r in roots if r.level == name)}, len(roots), "taxonomy.file"


def root() -> Node:
    return Node(name, (), {"depth": "field"})


def asks(node: Node, ctx: Context) -> list[Ask]:
    depth = node.data["depth"]
    if depth == "classify":
        return [Ask({"depth": depth, "count": 1, "field": "", "subfield": "",
                     "discipline": node.data["discipline"]}, Parents)]
    count = _count(depth, ctx.cfg)
    return [Ask({"depth": depth, "count": count, "field": node.data.get("field", ""),
                 "subfield": node.data.get("subfield", ""), "discipline": ""}, schema(count))]


def children(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[Node]:
    if outcomes[0] is None:
        return []
    depth, value, t = node.data["depth"], outcomes[0].value, ctx.cfg.taxonomy
    if depth == "classify":     # the discipline keeps the id of its line in the list
        return select([discipline_node(value.field, value.subfield, node.data["discipline"], node.path)], ctx)
    # Excluded fields and sub-fields are pruned before their subtrees are generated.
    if depth == "field":
        ctx.dropped += [n for n in value.names if _matches(t.exclude, [n])]
        return [Node(name, node.path + (name_part(n),), {"depth": "subfield", "field": n})
                for n in value.names if not _matches(t.exclude, [n])]
    if depth == "subfield":
        f = node.data["field"]
        ctx.dropped += [f"{f}/{n}" for n in value.names if _matches(t.exclude, [f, n, f"{f}/{n}"])]
        return [Node(name, node.path + (name_part(n),), {"depth": "discipline", "field": f, "subfield": n})
                for n in value.names if not _matches(t.exclude, [f, n, f"{f}/{n}"])]
    return select([discipline_node(node.data["field"], node.data["subfield"], n) for n in value.names], ctx)


def records(node: Node, outcomes: list[Optional[Outcome]], ctx: Context) -> list[dict]:
    if node.data["depth"] not in ("discipline", "classify") or outcomes[0] is None:
        return []
    # A scratch context: children() notes dropped nodes, which must be counted once.
    return [record(c) for c in children(node, outcomes, replace(ctx, dropped=[]))]


def record(discipline: Node) -> dict:
    d = discipline.data
    return {"id": discipline.id, "field": d["field"], "subfield": d["subfield"], "discipline": d["discipline"]}


def saved(run_dir: Path) -> None:
    """The editable taxonomy.yaml from the final levels/taxonomy.jsonl (in tree order)."""
    with open(run_dir / "levels" / f"{name}.jsonl", encoding="utf-8") as f:
        disciplines = [json.loads(line) for line in f if line.strip()]
    atomic_write_text(run_dir / "taxonomy.yaml",
                      "# Edit freely (drop a node to drop its subtree), then run: "
                      "glan-local taxonomy.file=<this file>\n"
                      + yaml.safe_dump(to_file(disciplines), sort_keys=False, allow_unicode=True))


def discipline_node(field: str, subfield: str, discipline: str, path: Optional[tuple[str, ...]] = None) -> Node:
    """A discipline, its id from its three names (or the given path: a flat list's line)."""
    path = path or (name_part(field), name_part(subfield), name_part(discipline))
    return Node("subjects", path, {"field": field, "subfield": subfield, "discipline": discipline})


# --- the editable file -------------------------------------------------------------------------

class _Sub(BaseModel, extra="forbid"):
    name: Text
    disciplines: list[Text] = Field(min_length=1)


class _Field(BaseModel, extra="forbid"):
    name: Text
    subfields: list[_Sub] = Field(min_length=1)


class TaxonomyFile(BaseModel, extra="forbid"):
    fields: list[_Field] = Field(min_length=1)


def to_file(disciplines: list[dict]) -> dict:
    """Nest flat discipline records (in tree order) into the editable file's shape; names are
    grouped, so inferred parents that repeat become one node."""
    fields: dict[str, dict[str, list[str]]] = {}
    for d in disciplines:
        subs = fields.setdefault(d["field"], {}).setdefault(d["subfield"], [])
        if d["discipline"] not in subs:
            subs.append(d["discipline"])
    return {"fields": [{"name": f, "subfields": [{"name": s, "disciplines": ds} for s, ds in subs.items()]}
                       for f, subs in fields.items()]}


def _matches(patterns, names: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(n.casefold(), p.casefold()) for p in patterns or () for n in names)


def keep(node: Node, include, exclude) -> bool:
    """Exclude wins; with include patterns, a discipline is kept if any of its names matches."""
    d = node.data
    names = [d["field"], d["subfield"], d["discipline"], f"{d['field']}/{d['subfield']}/{d['discipline']}"]
    if _matches(exclude, names):
        return False
    return not include or _matches(include, names)


def select(nodes: list[Node], ctx: Context) -> list[Node]:
    """The discipline nodes that taxonomy.include/exclude keep; the others are noted in ctx."""
    t = ctx.cfg.taxonomy
    kept = []
    for n in nodes:
        if n.level != "subjects" or keep(n, t.include, t.exclude):
            kept.append(n)
        else:
            ctx.dropped.append(f"{n.data['field']}/{n.data['subfield']}/{n.data['discipline']}")
    return kept


def _load_flat(p: Path, text: str, infer: bool) -> list[Node]:
    """One discipline per line (blank lines and # comments skipped)."""
    key = "taxonomy.file"
    names, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if normal_name(line) in seen:
            raise ConfigError(key, f"'{p}' line {lineno}: discipline '{line}' appears twice", "remove the duplicate")
        seen.add(normal_name(line))
        names.append(line)
        _cap(p, len(names))
    if not names:
        raise ConfigError(key, f"'{p}' lists no disciplines", "write one discipline per line")
    if infer:
        return [Node(name, discipline_node(UNSPECIFIED, UNSPECIFIED, n).path, {"depth": "classify", "discipline": n})
                for n in names]
    return [discipline_node(UNSPECIFIED, UNSPECIFIED, n) for n in names]


def load(path: str, infer_parents: bool = False) -> list[Node]:
    """Root nodes from a user's taxonomy (YAML/JSON tree or a .txt list), checked before any
    model loads: discipline nodes, or nodes asking the teacher for a discipline's parents."""
    p = Path(path).expanduser()
    key = "taxonomy.file"
    if not p.is_file():
        raise ConfigError(key, f"'{p}' " + ("is a directory" if p.is_dir() else "does not exist"),
                          "point taxonomy.file at a YAML, JSON or .txt taxonomy")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(key, f"'{p}' is {p.stat().st_size / 2**20:.0f} MiB, above the {MAX_FILE_BYTES // 2**20} MiB "
                          "a taxonomy file may have", "check that it is the right file, or split it into shards")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix in (".txt", ".lst", ".list"):
            return _load_flat(p, text, infer_parents)
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError as e:
        raise ConfigError(key, f"'{p}' is not UTF-8 text (byte {e.start})", "save the file as UTF-8")
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", getattr(e, "lineno", None))
        where = f" (line {line + 1 if isinstance(e, yaml.YAMLError) else line})" if line is not None else ""
        raise ConfigError(key, f"'{p}' is not valid YAML/JSON{where}",
                          "fix the syntax; see taxonomy.yaml of a run for the format")
    if raw is None:
        raise ConfigError(key, f"'{p}' is empty", "list the taxonomy as {fields: [{name, subfields: "
                          "[{name, disciplines: [...]}]}]}, or give a .txt file with one discipline per line")
    try:
        tax = TaxonomyFile.model_validate(raw)
    except Exception as e:
        err = e.errors()[0] if hasattr(e, "errors") else {"loc": (), "msg": str(e)}
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(key, f"'{p}' has the wrong shape at '{loc or 'top'}': {err['msg']}",
                          "use {fields: [{name, subfields: [{name, disciplines: [...]}]}]}")
    nodes = []
    _unique(p, [f.name for f in tax.fields], "field", "the taxonomy")
    for f in tax.fields:
        _unique(p, [s.name for s in f.subfields], "sub-field", f"field '{f.name}'")
        for s in f.subfields:
            seen = set()
            for d in s.disciplines:
                if normal_name(d) in seen:
                    raise ConfigError(key, f"'{p}': discipline '{d}' appears twice under {f.name} / {s.name}",
                                      "remove the duplicate")
                seen.add(normal_name(d))
                nodes.append(discipline_node(f.name, s.name, d))
    _cap(p, len(nodes))
    return nodes


def _cap(p: Path, n: int) -> None:
    if n > MAX_DISCIPLINES:
        raise ConfigError("taxonomy.file", f"'{p}' lists more than {MAX_DISCIPLINES:,} disciplines",
                          "check that it is the right file; split a larger taxonomy into several files and runs")


def _unique(p: Path, names: list[str], what: str, where: str) -> None:
    seen = set()
    for n in names:
        if normal_name(n) in seen:
            raise ConfigError("taxonomy.file", f"'{p}': {what} '{n}' appears twice in {where}",
                              "merge or rename the duplicates")
        seen.add(normal_name(n))

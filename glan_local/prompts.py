"""Prompt templates: prompts/<level>.j2, or a user's file per level, rendered in a sandbox.

Every template is compiled and checked when the run starts, so a syntax error, a missing file,
a variable the level does not provide (each level module's VARIABLES, plus `language`) or a
private attribute (`__class__`, which the sandbox refuses) stops the run before the model loads.
Undefined variables are errors (StrictUndefined), never blanks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from .errors import ConfigError
from .levels import NAMES as LEVELS

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
NAMES = ("system",) + LEVELS
SYSTEM_VARIABLES = frozenset({"level"})


class Templates:
    def __init__(self, prompts_cfg, language: str):
        from .language import resolve

        language = resolve(language)[0]
        # A user's template renders in the sandbox; the built-in ones are ours, and the sandbox's
        # checks on every attribute access were a third of the rendering time.
        self.env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                        keep_trailing_newline=False)
        trusted = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=False)
        self.language = language
        self.sources: dict[str, str] = {}
        self._system: dict[str, str] = {}
        self.templates: dict[str, jinja2.Template] = {}
        for name in NAMES:
            override = getattr(prompts_cfg, name, None)
            path = Path(override).expanduser() if override else PROMPTS_DIR / f"{name}.j2"
            key = f"prompts.{name}"
            if not path.is_file():
                why = "is a directory" if path.is_dir() else "does not exist"
                raise ConfigError(key, f"template file '{path}' {why}",
                                  f"point {key} at an existing .j2 file or set it to null")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(key, f"'{path}' is not UTF-8 text (byte {e.start})", "save the template as UTF-8")
            try:
                ast = self.env.parse(text)
                self.templates[name] = (self.env if override else trusted).from_string(text)
            except jinja2.TemplateSyntaxError as e:
                raise ConfigError(key, f"syntax error in {path}, line {e.lineno}: {e.message}",
                                  "fix the template at that line (Jinja syntax)")
            self._check(name, key, path, ast)
            self.sources[name] = text

    def _check(self, name: str, key: str, path: Path, ast: nodes.Template) -> None:
        """What would fail at render time, found now: unknown variables and private attributes."""
        from .levels import BY_NAME

        given = SYSTEM_VARIABLES if name == "system" else BY_NAME[name].VARIABLES
        allowed = given | {"language"}
        unknown = meta.find_undeclared_variables(ast) - allowed - set(self.env.globals)
        if unknown:
            first = min((n.lineno, n.name) for n in ast.find_all(nodes.Name) if n.name in unknown)
            raise ConfigError(key, f"{path}, line {first[0]}: unknown variable '{first[1]}' (the {name} template "
                              f"gets {', '.join(sorted(allowed))})",
                              "use only those variables (docs/taxonomy-and-prompts.md)")
        private = []
        for n in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
            attr = (n.attr if isinstance(n, nodes.Getattr) else
                    n.arg.value if isinstance(n, nodes.Getitem) and isinstance(n.arg, nodes.Const) else
                    n.args[0].value if isinstance(n, nodes.Filter) and n.name == "attr" and n.args
                    and isinstance(n.args[0], nodes.Const) else None)
            if isinstance(attr, str) and attr.startswith("_"):
                private.append((n.lineno, attr))
        if private:
            line = min(private)[0]
            names = ", ".join(f"'{a}'" for a in sorted({a for ln, a in private if ln == line}))
            raise ConfigError(key, f"{path}, line {line}: {names}: private attributes, which the template "
                              "sandbox refuses", "use only the documented variables and their fields")

    def hashes(self) -> dict[str, str]:
        return {n: hashlib.sha256(t.encode()).hexdigest() for n, t in self.sources.items()}

    def used(self, enabled: list[str]) -> dict[str, str]:
        """The text of every template a run with these levels renders: its inputs."""
        return {n: t for n, t in self.sources.items() if n == "system" or n in enabled}

    def render(self, name: str, **variables) -> str:
        try:
            return self.templates[name].render(language=self.language, **variables).strip()
        except jinja2.UndefinedError as e:
            raise ConfigError(f"prompts.{name}", f"template uses an unknown variable ({e.message})",
                              f"use only the variables documented for the {name} level")
        except SecurityError as e:
            raise ConfigError(f"prompts.{name}", f"the template sandbox refused: {e}",
                              "use only the documented variables and their fields")
        except Exception as e:   # a filter or operator on the wrong type, a missing include ...
            raise ConfigError(f"prompts.{name}", f"the template failed to render ({type(e).__name__}: {e})",
                              "fix the template; the variables it gets are in docs/taxonomy-and-prompts.md")

    def messages(self, level: str, **variables) -> list[dict]:
        if level not in self._system:       # the same for every request of a level
            self._system[level] = self.render("system", level=level)
        return [{"role": "system", "content": self._system[level]},
                {"role": "user", "content": self.render(level, **variables)}]

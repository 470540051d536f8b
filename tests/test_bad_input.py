"""Issue 7, the bad-input catalogue: every bad input is answered with one line that names the
culprit (config key, file, line) and the fix, a non-zero exit, no traceback (unless
GLAN_DEBUG=1), and no change to the outputs already in the run directory.

Pre-engine inputs run the real `glan-local` command. A stub `vllm` package shadows the real
one in those subprocesses, so an input that wrongly passes every check fails loudly instead of
starting an engine. Run-time faults (bad replies, backend errors, signals, a full disk) use the
FAKE engine (tests/fakes.py).

Every case is recorded (input, message, exit code). Regenerate docs/BAD_INPUT.md with:

    GLAN_CATALOGUE=docs/bad_input.json .venv/bin/python -m pytest tests/test_bad_input.py \\
        && .venv/bin/python scripts/bad_input_table.py
"""
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fakes import FakeEngine

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent / "glan-local"
GROUPS = ("config", "model", "taxonomy file", "prompt templates", "schemas", "runtime", "teacher replies")

# --- the catalogue -------------------------------------------------------------------------------

_RECORDS: list[dict] = []


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """record(group, what, setup, message, exit): one row of docs/BAD_INPUT.md. Paths that differ
    between machines are replaced by <tmp>, <repo>, ~. Written to $GLAN_CATALOGUE at the end."""
    base = str(tmp_path_factory.getbasetemp())

    def _norm(text: str) -> str:
        return text.replace(base, "<tmp>").replace(str(ROOT), "<repo>").replace(str(Path.home()), "~")

    def _record(group: str, what: str, setup: str, message: str, code) -> None:
        assert group in GROUPS, group
        _RECORDS.append({"group": group, "input": what, "setup": _norm(setup), "message": _norm(message),
                         "exit": code})

    yield _record
    out = os.environ.get("GLAN_CATALOGUE")
    if out:
        Path(out).write_text(json.dumps(_RECORDS, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- a world of inputs, and one complete run that nothing may damage ------------------------------

def _compose(*overrides: str):
    from hydra import compose as hcompose, initialize_config_dir
    from omegaconf import OmegaConf

    from glan_local.cli import register_resolvers
    from glan_local.config import GlanConfig, register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hcompose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), cfg))


def make_model(d: Path, config=True, weights=True, template=True, tokenizer=True) -> Path:
    """A model folder good enough for every check before the engine: config, dummy weights, a
    chat template and a tiny word-level tokenizer (one token per word or punctuation mark)."""
    d.mkdir(parents=True)
    if config:
        (d / "config.json").write_text("{}")
    if weights:
        (d / "model.safetensors").write_bytes(b"0")
    if template:
        (d / "chat_template.jinja").write_text("{{ messages }}")
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(str(d / "tokenizer.json"))
        (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                             "unk_token": "[UNK]"}))
    return d


def snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


GOOD_TAXONOMY = "fields:\n  - name: Sciences\n    subfields:\n      - name: Chemistry\n        disciplines: [Organic Chemistry]\n"
TAXONOMY_FILES = {
    "bad.yaml": "fields:\n  - name: Sciences\n    subfields: [\n",
    "bad.json": '{"fields": [\n  {"name": "Sciences",\n}\n',
    "list.yaml": "- Chemistry\n- Physics\n",
    "typo.yaml": "fields:\n  - name: Sciences\n    subfield:\n      - name: Chemistry\n        disciplines: [Organic Chemistry]\n",
    "empty.yaml": "",
    "dupfield.yaml": "fields:\n  - {name: Sciences, subfields: [{name: Chemistry, disciplines: [Organic Chemistry]}]}\n"
                     "  - {name: Sciences, subfields: [{name: Physics, disciplines: [Optics]}]}\n",
    "dupdisc.yaml": GOOD_TAXONOMY.replace("[Organic Chemistry]", "[Organic Chemistry, organic chemistry]"),
    "nodisc.yaml": GOOD_TAXONOMY.replace("[Organic Chemistry]", "[]"),
    "blank.yaml": GOOD_TAXONOMY.replace("[Organic Chemistry]", "['Organic Chemistry', '   ']"),
    "dup.txt": "Organic Chemistry\nPhysics\n# a comment\norganic chemistry\n",
    "comments.txt": "# nothing but comments\n\n",
    "good.yaml": GOOD_TAXONOMY,
}
TEMPLATES = {
    "syntax.j2": "Write a question on {{ discipline }}.\n{% for c in concepts %}\n- {{ c }}\n",
    "unknown.j2": "Write a question on {{ discipline }} for {{ audience }}.\n",
    "escape.j2": "{{ ''.__class__.__mro__[1].__subclasses__() }} {{ question }}\n",
    "runtime.j2": "Write a question on {{ discipline }} for {{ subject.audience }}.\n",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from glan_local.run import generate

    w = tmp_path_factory.mktemp("world")
    (w / "cwd").mkdir()                                   # Hydra's own run folders land here
    (w / "a-file").write_text("not a directory\n")
    model = make_model(w / "model")
    make_model(w / "not-a-model", config=False, weights=False, template=False, tokenizer=False)
    (w / "not-a-model" / "notes.txt").write_text("hello\n")
    make_model(w / "no-weights", weights=False)
    make_model(w / "no-template", template=False, tokenizer=False)
    make_model(w / "no-tokenizer", tokenizer=False)
    make_model(w / "broken-tokenizer-config", template=False, tokenizer=False)
    (w / "broken-tokenizer-config" / "tokenizer_config.json").write_text('{"chat_template": ')
    make_model(w / "broken-tokenizer")
    (w / "broken-tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    tax = w / "tax"
    tax.mkdir()
    for name, text in TAXONOMY_FILES.items():
        (tax / name).write_text(text)
    (tax / "latin1.yaml").write_bytes("fields: [{name: Ch\xe9mie}]\n".encode("latin-1"))
    (tax / "huge.txt").write_text("".join(f"Discipline {i}\n" for i in range(100_001)))
    tpl = w / "tpl"
    tpl.mkdir()
    for name, text in TEMPLATES.items():
        (tpl / name).write_text(text)
    (tpl / "latin1.j2").write_bytes("Question sur {{ discipline }}, \xe9crite en {{ language }}.\n".encode("latin-1"))
    damaged = w / "damaged-run"
    damaged.mkdir()
    (damaged / "store.sqlite").write_bytes(b"this is not a database" * 100)
    guard = w / "guard" / "vllm"
    guard.mkdir(parents=True)
    (guard / "__init__.py").write_text('raise RuntimeError("test guard: a bad input reached the engine")\n')

    run = w / "run"
    generate(_compose(f"model.path={model}", "quality.enabled=false"), run, engine_factory=lambda p: FakeEngine())
    assert (run / "data" / "train.jsonl").exists()
    return SimpleNamespace(dir=w, model=model, run=run, snap=snapshot(run), tax=tax, tpl=tpl)


def glan(world, *args: str, env=None) -> subprocess.CompletedProcess:
    """The real command, on the world's model and complete run unless the case says otherwise."""
    cmd = [str(BIN), f"model.path={world.model}", f"out_dir={world.run}", *args]
    path = os.pathsep.join(filter(None, [str(world.dir / "guard"), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    for k in ("GLAN_DEBUG", "HYDRA_FULL_ERROR"):
        if k not in (env or {}):
            full_env.pop(k, None)
    return subprocess.run(cmd, cwd=world.dir / "cwd", env=full_env, capture_output=True, text=True, timeout=300)


def one_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr[-3000:]
    return lines[0]


# --- inputs refused before the model loads: the real command --------------------------------------
# (id, group, what, overrides with {w} for the world's folder, culprit the line must name, exit)

CASES = [
    ("unknown-key", "config", "unknown key", ["breadth.bogus=1"], "breadth.bogus", 2),
    ("unknown-new-key", "config", "new key the schema lacks", ["+colour=blue"], "colour", 2),
    ("wrong-type", "config", "wrong type", ["breadth.fields=two"], "breadth.fields", 2),
    ("not-a-list", "config", "a word where a list is expected", ["taxonomy.include=Chemistry"], "taxonomy.include", 2),
    ("no-equals", "config", "an argument that is not key=value", ["fields"], "'fields'", 2),
    ("unparsable", "config", "unbalanced brackets", ["breadth.fields=[1,"], "breadth.fields=[1,", 2),
    ("zero-breadth", "config", "zero breadth", ["breadth.fields=0"], "breadth.fields", 2),
    ("negative-breadth", "config", "negative breadth", ["breadth.questions_per_syllabus=-2"],
     "breadth.questions_per_syllabus", 2),
    ("min-above-max", "config", "minimum above maximum", ["breadth.sessions_min=5", "breadth.sessions_max=3"],
     "breadth.sessions_min", 2),
    ("probability", "config", "probability above 1", ["breadth.two_session_fraction=1.5"],
     "breadth.two_session_fraction", 2),
    ("top-p", "config", "top_p of 0", ["sampling.answers.top_p=0"], "sampling.answers.top_p", 2),
    ("max-tokens", "config", "max_tokens not below max_model_len", ["sampling.answers.max_tokens=5000"],
     "sampling.answers.max_tokens", 2),
    ("attempts", "config", "zero attempts", ["engine.max_attempts=0"], "engine.max_attempts", 2),
    ("speculate", "config", "negative speculation threshold", ["engine.speculate_below=-1"], "engine.speculate_below", 2),
    ("level-attempts", "config", "zero attempts per level", ["engine.min_level_attempts=0"],
     "engine.min_level_attempts", 2),
    ("exclude-all", "config", "an exclude pattern that matches every discipline", ["taxonomy.exclude=[*/*]"],
     "taxonomy.exclude", 2),
    ("backend", "config", "unknown structured-output backend", ["engine.backend=llguidance"], "engine.backend", 2),
    ("model-preset", "config", "unknown model preset", ["model=gpt-5"], "model/gpt-5", 2),
    ("breadth-preset", "config", "unknown breadth preset", ["breadth=huge"], "breadth/huge", 2),
    ("data-parallel", "config", "data parallelism in one process", ["model.data_parallel_size=2"],
     "model.data_parallel_size", 2),
    ("language", "config", "unknown language code", ["language=xx"], "language", 2),
    ("shard-index", "config", "shard index out of range", ["shard.count=2", "shard.index=5"], "shard.index", 2),
    ("absurd-breadth", "config", "absurd breadth (planned requests above engine.max_planned_requests)",
     ["breadth.fields=100000", "breadth.subfields_per_field=100"], "engine.max_planned_requests", 2),
    ("out-dir-under-file", "config", "out_dir under a file", ["out_dir={w}/a-file/run"], "out_dir", 2),
    ("out-dir-proc", "config", "out_dir where nothing can be created", ["out_dir=/proc/glan-run"], "out_dir", 2),
    ("cache-dir-under-file", "config", "cache_dir is a file", ["cache_dir={w}/a-file"], "cache_dir", 2),
    ("damaged-store", "config", "out_dir whose store.sqlite is not a database", ["out_dir={w}/damaged-run"],
     "store.sqlite", 2),
    ("other-config", "config", "out_dir holding a run of another config", ["breadth.questions_per_syllabus=1"],
     "overwrite=true", 2),
    ("benchmark", "config", "missing benchmark file", ["quality.decontam.benchmarks=[{w}/no-such-benchmark.jsonl]"],
     "quality.decontam.benchmarks", 2),
    ("language-confidence", "config", "language check threshold out of range",
     ["quality.language.min_confidence=0.3"], "quality.language.min_confidence", 2),
    ("language-fields", "config", "language check with no columns", ["quality.language.fields=[]"],
     "quality.language.fields", 2),
    ("model-missing", "model", "model.path does not exist", ["model.path={w}/no-such-model"], "model.path", 2),
    ("model-hub-id", "model", "hub id not in the local cache", ["model.path=nobody/no-such-model"],
     "huggingface-cli download", 2),
    ("not-a-model", "model", "folder that is not a model", ["model.path={w}/not-a-model"], "config.json", 2),
    ("no-weights", "model", "model without weights", ["model.path={w}/no-weights"], "weights", 2),
    ("no-template", "model", "model without a chat template", ["model.path={w}/no-template"], "chat template", 2),
    ("broken-tokenizer-config", "model", "tokenizer_config.json is not JSON",
     ["model.path={w}/broken-tokenizer-config"], "tokenizer_config.json", 2),
    ("no-tokenizer", "model", "model without a tokenizer", ["model.path={w}/no-tokenizer"], "has no tokenizer", 2),
    ("broken-tokenizer", "model", "tokenizer.json is damaged", ["model.path={w}/broken-tokenizer"],
     "cannot load the tokenizer", 2),
    ("context", "model", "max_model_len too small for a level's prompts", ["model.max_model_len=1100"],
     "model.max_model_len", 2),
    ("answer-no-template", "model", "answer teacher without a chat template",
     ["model@answers.model=smollm2-135m", "answers.model.path={w}/no-template"], "answers.model.path", 2),
    ("answer-context", "model", "answer teacher's max_model_len too small for the answers",
     ["model@answers.model=smollm2-135m", "answers.model.max_model_len=800"], "answers.model.max_model_len", 2),
    ("tax-missing", "taxonomy file", "file does not exist", ["taxonomy.file={w}/tax/nope.yaml"], "nope.yaml", 2),
    ("tax-dir", "taxonomy file", "a directory", ["taxonomy.file={w}/tax"], "is a directory", 2),
    ("tax-yaml", "taxonomy file", "not YAML (line given)", ["taxonomy.file={w}/tax/bad.yaml"], "line 4", 2),
    ("tax-json", "taxonomy file", "not JSON (line given)", ["taxonomy.file={w}/tax/bad.json"], "line 3", 2),
    ("tax-latin1", "taxonomy file", "not UTF-8", ["taxonomy.file={w}/tax/latin1.yaml"], "UTF-8", 2),
    ("tax-shape", "taxonomy file", "wrong shape (a list)", ["taxonomy.file={w}/tax/list.yaml"], "wrong shape", 2),
    ("tax-typo", "taxonomy file", "misspelt key", ["taxonomy.file={w}/tax/typo.yaml"], "fields.0", 2),
    ("tax-empty", "taxonomy file", "empty file", ["taxonomy.file={w}/tax/empty.yaml"], "is empty", 2),
    ("tax-dup-field", "taxonomy file", "duplicate field names", ["taxonomy.file={w}/tax/dupfield.yaml"],
     "'Sciences' appears twice", 2),
    ("tax-dup-discipline", "taxonomy file", "duplicate disciplines (case-insensitive)",
     ["taxonomy.file={w}/tax/dupdisc.yaml"], "appears twice", 2),
    ("tax-no-disciplines", "taxonomy file", "a sub-field with no disciplines", ["taxonomy.file={w}/tax/nodisc.yaml"],
     "disciplines", 2),
    ("tax-blank", "taxonomy file", "a blank discipline name", ["taxonomy.file={w}/tax/blank.yaml"], "blank", 2),
    ("tax-txt-dup", "taxonomy file", ".txt list with a repeated line", ["taxonomy.file={w}/tax/dup.txt"], "line 4", 2),
    ("tax-txt-empty", "taxonomy file", ".txt list with no disciplines", ["taxonomy.file={w}/tax/comments.txt"],
     "no disciplines", 2),
    ("tax-huge", "taxonomy file", "more than 100,000 disciplines", ["taxonomy.file={w}/tax/huge.txt"], "100,000", 2),
    ("tax-include", "taxonomy file", "include patterns that match nothing",
     ["taxonomy.file={w}/tax/good.yaml", "taxonomy.include=[Nothing*]"], "taxonomy.include", 2),
    ("tpl-missing", "prompt templates", "template file does not exist", ["prompts.questions={w}/tpl/nope.j2"],
     "prompts.questions", 2),
    ("tpl-syntax", "prompt templates", "syntax error (line given)", ["prompts.questions={w}/tpl/syntax.j2"],
     "line 3", 2),
    ("tpl-unknown", "prompt templates", "unknown variable (found before the model loads)",
     ["prompts.questions={w}/tpl/unknown.j2"], "'audience'", 2),
    ("tpl-escape", "prompt templates", "sandbox escape (`''.__class__.__mro__`)",
     ["prompts.answers={w}/tpl/escape.j2"], "__class__", 2),
    ("tpl-latin1", "prompt templates", "template not UTF-8", ["prompts.system={w}/tpl/latin1.j2"], "UTF-8", 2),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused_before_the_model_loads(world, record, case):
    _, group, what, overrides, culprit, code = case
    args = [o.replace("{w}", str(world.dir)) for o in overrides]
    p = glan(world, *args)
    line = one_line(p)
    assert p.returncode == code, (p.returncode, line)
    assert culprit in line and "Fix:" in line, line
    assert line.startswith("config error: ")
    assert snapshot(world.run) == world.snap, "the complete run's files changed"
    record(group, what, " ".join(args), line, p.returncode)


def test_a_run_directory_in_use_is_refused(world, record):
    with open(world.run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = glan(world)
    line = one_line(p)
    assert p.returncode == 2 and "another glan-local run" in line and "out_dir" in line
    assert snapshot(world.run) == world.snap
    record("config", "out_dir used by a running glan-local", "(a second run on the same out_dir)", line, 2)


def test_the_quality_command_names_a_bad_language_and_says_an_unknown_one_once(tmp_path, record):
    """glan-local-quality --language: a code that is no language is refused; a language the
    detector does not know is not an error, its rows are kept unchecked and it is said once."""
    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps({"question": f"What is {i} plus {i}, and why does the order not matter?",
                                       "answer": f"It is {2 * i}: addition is commutative, so a + b = b + a."}) + "\n"
                           for i in range(3)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    quality = str(BIN.parent / "glan-local-quality")
    p = subprocess.run([quality, str(src), "--language", "xx"], env=env, capture_output=True, text=True, timeout=300)
    line = one_line(p)
    assert p.returncode == 2 and line.startswith("config error: --language: 'xx'") and "Fix:" in line, line
    assert not (tmp_path / "mine-publish").exists()
    record("config", "bad `--language` of glan-local-quality", "glan-local-quality mine.jsonl --language xx", line, 2)
    p = subprocess.run([quality, str(src), "-o", str(tmp_path / "pub"), "--language", "Klingon",
                        "report.enabled=false"], env=env, capture_output=True, text=True, timeout=600)
    said = [ln for ln in p.stderr.splitlines() if "does not know" in ln]
    assert p.returncode == 0 and len(said) == 1 and "Klingon" in said[0], p.stderr[-3000:]
    assert sum(1 for _ in open(tmp_path / "pub" / "data" / "train.jsonl")) == 3
    record("config", "a language the detector does not know (not an error: its rows are kept unchecked)",
           "glan-local-quality mine.jsonl --language Klingon", said[0].strip(), 0)


def test_glan_debug_shows_the_traceback(world):
    p = glan(world, "breadth.fields=0", env={"GLAN_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr and "breadth.fields" in p.stderr


def test_builtin_templates_use_only_their_declared_variables_and_get_them_all(compose, tmp_path):
    """VARIABLES (each level module) is the contract the start-up check enforces: the built-in
    templates stay within it, and every ask really passes all of it."""
    from jinja2 import meta

    from glan_local.levels import BY_NAME
    from glan_local.prompts import SYSTEM_VARIABLES, Templates
    from glan_local.run import generate

    t = Templates(compose().prompts, "English")
    for name, src in t.sources.items():
        declared = SYSTEM_VARIABLES if name == "system" else BY_NAME[name].VARIABLES
        assert meta.find_undeclared_variables(t.env.parse(src)) <= declared | {"language"}, name
    seen: dict[str, set] = {}
    render = Templates.render

    def spy(self, name, **variables):
        seen.setdefault(name, set()).update(variables)
        return render(self, name, **variables)

    model = make_model(tmp_path / "m", tokenizer=False)
    import glan_local.prompts as prompts
    orig, prompts.Templates.render = prompts.Templates.render, spy
    try:
        generate(compose(f"model.path={model}", "quality.enabled=false", "quality.judge.enabled=true"),
                 tmp_path / "run", engine_factory=lambda p: FakeEngine())
    finally:
        prompts.Templates.render = orig
    for name, got in seen.items():
        declared = SYSTEM_VARIABLES if name == "system" else BY_NAME[name].VARIABLES
        assert declared <= got, (name, declared - got)
    assert set(seen) == {"system", "taxonomy", "subjects", "syllabus", "questions", "answers", "judge"}


# --- faults during a run: the CLI's job wrapper with the fake engine, in this process -------------

def job(cfg, run_dir: Path, engine, monkeypatch, capsys) -> tuple[int, str, str]:
    """cli._job_or_exit as `glan-local` runs it, with the fake engine: (exit code, last line, stderr)."""
    from omegaconf import OmegaConf

    from glan_local import cli, run

    monkeypatch.delenv("GLAN_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    real = run.generate
    monkeypatch.setattr(run, "generate", lambda c, d, engine_factory=None, hydra_files=None:
                        real(c, d, engine_factory=lambda p: engine, hydra_files=hydra_files))
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    capsys.readouterr()
    try:
        cli._job_or_exit(container, str(run_dir), {})
        code = 0
    except SystemExit as e:
        code = e.code
    monkeypatch.setattr(run, "generate", real)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return code, (lines[-1] if lines else ""), err


def test_template_error_found_at_render_time(compose, world, tmp_path, monkeypatch, capsys, record):
    """A field the level's objects lack (subject.audience) can only be found when rendering."""
    cfg = compose(f"model.path={world.model}", f"prompts.questions={world.tpl / 'runtime.j2'}", "quality.enabled=false")
    code, line, _ = job(cfg, tmp_path / "run", FakeEngine(), monkeypatch, capsys)
    assert code == 2 and line.startswith("config error: prompts.questions:") and "audience" in line and "Fix:" in line
    record("prompt templates", "unknown field of a variable (found at the first render)",
           "prompts.questions=runtime.j2 (uses subject.audience)", line, code)


class SchemaFails(FakeEngine):
    """The backend cannot compile the syllabus schema: vLLM fails those requests."""

    def _answer(self, req):
        from dataclasses import replace

        c = super()._answer(req)
        if req.level == "syllabus":
            return replace(c, text="", finish_reason="error", output_tokens=0,
                           error="ValueError: regex compilation of the JSON schema timed out\nafter 60 s")
        return c


def test_backend_error_on_a_schema_is_retried_never_stored_and_the_run_resumes(compose, world, tmp_path, monkeypatch,
                                                                               capsys, record):
    """An engine failure (here: a schema the backend cannot compile) is not the model's reply:
    it is sent again with backoff, never stored as the request's outcome, and past
    engine.error_retries the run stops with one line; the same command resumes once fixed."""
    ov = (f"model.path={world.model}", "engine.max_attempts=2", "engine.min_level_attempts=1",
          "engine.error_backoff_s=0", "quality.enabled=false")
    code, line, _ = job(compose(*ov), tmp_path / "run", SchemaFails(), monkeypatch, capsys)
    assert code == 3 and line.startswith("[glan-local] error: the engine failed a syllabus request 4 times in a row "
                                         "(backend error: ValueError: regex compilation"), line
    assert "syllabus level's JSON schema" in line and "Fix: raise engine.regex_timeout_s, or set " \
        "engine.backend=xgrammar" in line and "the same command resumes" in line and "glan.log" in line
    assert "\n" not in line
    from e2e import stored

    assert not stored(tmp_path / "run", "syllabus"), "an engine failure was stored as the request's outcome"
    upstream = stored(tmp_path / "run")
    assert upstream and (tmp_path / "run" / "glan.log").read_text().count("Traceback") >= 1
    # The same command with a working engine: nothing above the syllabi is asked again.
    from glan_local.run import generate

    eng = FakeEngine()
    s = generate(compose(*ov), tmp_path / "run", engine_factory=lambda p: eng)
    assert s["rows"] > 0 and not [r for r in eng.submitted if r.level in ("taxonomy", "subjects")]
    assert s["levels"]["syllabus"]["failures"] == {}
    record("schemas", "a schema the backend cannot compile (vLLM fails every request with it)",
           "fake engine: finish_reason=error on every syllabus request", line, code)


NONSENSE = [
    ("taxonomy", '{"names": []}', "invalid: names", "empty list of names"),
    ("taxonomy", '{"names": ["Sciences", "   "]}', "invalid: names", "whitespace-only name"),
    ("subjects", '{"subjects": []}', "invalid: subjects", "empty subject list"),
    ("syllabus", '{"introduction": "\\t", "objectives": ["a"], "outcomes": ["b"], "sessions": []}',
     "invalid: introduction", "blank introduction, no sessions"),
    ("questions", '{"question": "  \\n "}', "blank text", "blank question"),
    ("answers", "   \n\t", "invalid: blank text", "blank free-text answer"),
]


def _texts(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _texts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _texts(v)


@pytest.mark.parametrize("level,reply,reason,what", NONSENSE, ids=[f"{n[0]}-{i}" for i, n in enumerate(NONSENSE)])
def test_teacher_nonsense_is_retried_never_a_row(compose, world, tmp_path, level, reply, reason, what, record):
    from glan_local.run import generate

    seen: dict[str, int] = {}
    per_node = 2 if level == "subjects" else 1          # the tiny breadth's subject_queries

    def fault(req):
        if req.level != level:
            return None
        sig = json.dumps(req.messages)
        seen[sig] = seen.get(sig, 0) + 1
        return (reply, "stop") if seen[sig] <= per_node else None   # every first attempt is nonsense

    # "First" is the first reply the fake gives for a prompt: attempts started ahead of need
    # (speculative retries) would be answered in any order, so here every retry waits its turn.
    cfg = compose(f"model.path={world.model}", "breadth.fields=2", "quality.enabled=false", "engine.speculate_below=0")
    s = generate(cfg, tmp_path / "run", engine_factory=lambda p: FakeEngine(fault))
    st = s["levels"][level]
    assert st["retries"] >= 1 and st["failed"] == 0 and st["ok"] == st["planned"]
    assert s["rows"] > 0
    db = sqlite3.connect(tmp_path / "run" / "store.sqlite")
    reasons = [r for (r,) in db.execute("SELECT reason FROM replies WHERE level=? AND status='failed'", (level,))]
    db.close()
    assert len(reasons) == st["retries"] and all(reason in r for r in reasons), reasons
    for f in (tmp_path / "run" / "levels").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            assert all(t.strip() for t in _texts(json.loads(line))), (f.name, line)
    record("teacher replies", f"{level}: {what}", f"fake teacher's first reply: {reply.strip() or repr(reply)}", sorted(reasons)[0],
           "0 (retried, never a row)")


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                   sqlite3.OperationalError("database or disk is full")], ids=["oserror", "sqlite"])
def test_disk_full_while_storing_replies(compose, world, tmp_path, monkeypatch, capsys, record, error):
    from glan_local.run import generate
    from glan_local.store import Store

    run = tmp_path / "run"
    # Retries wait their turn (no speculative attempts), so the store holds exactly the 6
    # replies put before the disk filled and the resume takes every one of them.
    cfg = compose(f"model.path={world.model}", "quality.enabled=false", "engine.speculate_below=0")
    real_put, calls = Store.put, []

    def put(self, reply, *prompt):
        calls.append(reply.key)
        if len(calls) > 6:
            raise error
        real_put(self, reply, *prompt)

    monkeypatch.setattr(Store, "put", put)
    code, line, _ = job(cfg, run, FakeEngine(), monkeypatch, capsys)
    monkeypatch.setattr(Store, "put", real_put)
    assert code == 1 and "disk full while writing" in line and str(run) in line
    assert "run the same command again to resume" in line
    db = sqlite3.connect(run / "store.sqlite")
    assert db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 6
    db.close()
    assert not (run / "data").exists()
    s = generate(cfg, run, engine_factory=lambda p: FakeEngine())      # space freed: resume
    assert s["totals"]["from_store"] == 6 and s["rows"] > 0
    record("runtime", f"disk full while storing a reply ({type(error).__name__})",
           "store.sqlite cannot grow (simulated)", line, code)


def test_disk_full_while_exporting_keeps_the_previous_dataset(compose, world, tmp_path, monkeypatch, capsys, record):
    from datasets import Dataset

    from glan_local.run import generate

    run = tmp_path / "run"
    cfg = compose(f"model.path={world.model}", "quality.enabled=false")
    generate(cfg, run, engine_factory=lambda p: FakeEngine())
    before = {p.name: p.read_bytes() for p in (run / "data").iterdir()}
    levels_before = {p.name: p.read_bytes() for p in (run / "levels").iterdir()}

    def full(self, path, *a, **k):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Dataset, "to_parquet", full)
    code, line, _ = job(cfg, run, FakeEngine(), monkeypatch, capsys)
    assert code == 1 and line.startswith("[glan-local] disk full while writing ") and "parquet.tmp" in line
    assert {p.name: p.read_bytes() for p in (run / "data").iterdir()} == before
    assert {p.name: p.read_bytes() for p in (run / "levels").iterdir()} == levels_before
    assert not list(run.rglob("*.tmp"))
    record("runtime", "disk full while writing the dataset", "the parquet writer fails with ENOSPC (simulated)",
           line, code)


SLOW_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from fakes import FakeEngine
    from test_bad_input import _compose
    from omegaconf import OmegaConf
    from glan_local import cli, run

    class Slow(FakeEngine):
        def step(self):
            time.sleep(0.25)
            return super().step()

    # No speculative attempts: then the resume takes every stored reply, which the test counts.
    cfg = _compose("model.path={model}", "quality.enabled=false", "engine.speculate_below=0")
    real = run.generate
    run.generate = lambda c, d, engine_factory=None, hydra_files=None: real(c, d, engine_factory=lambda p: Slow(batch=1))
    cli._job_or_exit(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True), {out!r}, {{}})
""")


def _count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


# SIGUSR2: what Slurm sends before the time limit (hydra.launcher.signal_delay_s).
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2], ids=["SIGTERM", "SIGINT", "SIGUSR2"])
def test_signals_stop_cleanly_and_the_same_command_resumes(compose, world, tmp_path, record, sig):
    from glan_local.run import generate

    out = tmp_path / "run"
    script = SLOW_RUN.format(tests=str(TESTS), model=str(world.model), out=str(out))
    env = {k: v for k, v in os.environ.items() if k not in ("GLAN_DEBUG", "HYDRA_FULL_ERROR")}
    p = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _count(out / "store.sqlite") < 4 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert "Traceback" not in err, err
    line = [x for x in err.splitlines() if x.strip()][-1]
    m = re.fullmatch(rf"\[glan-local\] stopped by {sig.name}: (\d+) replies are saved in (.+); "
                     r"run the same command again to resume", line)
    assert p.returncode == 130 and m, (p.returncode, err[-2000:])
    n = int(m.group(1))
    assert Path(m.group(2)) == out / "store.sqlite" and n == _count(out / "store.sqlite") >= 4
    assert not (out / "data").exists()
    con = sqlite3.connect(out / "store.sqlite")
    stored = {k for (k,) in con.execute("SELECT key FROM replies")}
    con.close()
    cfg = compose(f"model.path={world.model}", "quality.enabled=false")
    eng = FakeEngine()
    s = generate(cfg, out, engine_factory=lambda p: eng)       # the same command again
    assert s["totals"]["from_store"] == n and s["rows"] > 0
    assert eng.submitted and not stored & {r.key for r in eng.submitted}   # nothing stored is asked again
    what = {signal.SIGINT: "Ctrl-C", signal.SIGUSR2: "Slurm's warning before the time limit"}.get(sig, "kill")
    record("runtime", f"{what} ({sig.name}) during generation",
           f"kill -{sig.name[3:]} <pid>", re.sub(r": \d+ replies", ": N replies", line.replace(str(out), "<run>")),
           p.returncode)


def test_ctrl_c_outside_generation_and_unexpected_errors_are_one_line(compose, world, tmp_path, monkeypatch,
                                                                       capsys, record):
    """Ctrl-C while the teacher loads (before the run's own handler), and an error nobody
    foresaw (a bug): still one line, no traceback."""
    from glan_local import run

    cfg = compose(f"model.path={world.model}", "quality.enabled=false")
    for exc, code, what in ((KeyboardInterrupt(), 130, "Ctrl-C while the teacher loads"),
                            (RuntimeError("something nobody foresaw\non two lines"), 1,
                             "an unexpected error inside glan-local (a bug)")):
        def boom(*a, exc=exc):
            raise exc

        monkeypatch.setattr(run.Run, "teachers", boom)
        got, line, err = job(cfg, tmp_path / "run", FakeEngine(), monkeypatch, capsys)
        said = [x for x in err.splitlines() if x.strip() and not x.startswith("[glan-local] run directory:")]
        assert got == code and len(said) == 1, err
        assert "run the same command again to resume" in line
        record("runtime", what, f"{type(exc).__name__} raised (simulated)", line, got)


class RootFails(FakeEngine):
    """The teacher never gives a usable taxonomy root: every attempt is cut at max_tokens."""

    def _answer(self, req):
        from dataclasses import replace

        c = super()._answer(req)
        return replace(c, text='{"names": ["Sci', finish_reason="length") if req.level == "taxonomy" else c


def test_root_that_fails_every_attempt_stops_the_run_with_one_line(compose, world, tmp_path, monkeypatch, capsys,
                                                                   record):
    """The H200's default run: the root failed 4 of 4, nothing below it ran, and the run said
    `dataset: ... (0 rows)` with exit 0. Now: the root alone gets engine.min_level_attempts tries,
    then one line, exit 3, and the failed attempts stay in the store."""
    import sqlite3

    cfg = compose(f"model.path={world.model}", "quality.enabled=false")
    run = tmp_path / "run"
    code, line, err = job(cfg, run, RootFails(), monkeypatch, capsys)
    assert code == 3 and line.startswith("[glan-local] error: every request of the taxonomy level failed (1 of 1;")
    assert "last reason: cut at max_tokens" in line and "backend outlines" in line
    assert "Fix: raise sampling.taxonomy.max_tokens" in line and str(run / "store.sqlite") in line
    assert "dataset:" not in err                                   # never the success line
    stored = sqlite3.connect(run / "store.sqlite").execute("SELECT level, status FROM replies").fetchall()
    assert stored == [("taxonomy", "failed")] * 12                 # engine.min_level_attempts, all kept
    assert json.loads((run / "summary.json").read_text())["error"] in line
    record("teacher replies", "the taxonomy root fails every attempt (the run would be empty)",
           "fake engine: every taxonomy reply cut at max_tokens", line, code)


class CheckFails(FakeEngine):
    """The structured-output backend fails its start-up self-check (as outlines did on vLLM 0.26)."""

    def _answer(self, req):
        from dataclasses import replace

        c = super()._answer(req)
        if req.level == "self-check":
            return replace(c, text='{"answer": "yes"}', finish_reason="error",
                           error="grammar rejected tokens [1]")
        return c


def test_backend_that_fails_its_self_check_stops_before_the_tree(compose, world, tmp_path, monkeypatch, capsys,
                                                                 record):
    cfg = compose(f"model.path={world.model}", "quality.enabled=false")
    run = tmp_path / "run"
    engine = CheckFails()
    code, line, err = job(cfg, run, engine, monkeypatch, capsys)
    assert code == 3 and len(engine.self_checks) == 1 and engine.submitted == []   # no request of the tree
    assert line.startswith("[glan-local] error: the outlines structured-output backend failed its start-up "
                           "self-check") and "finish_reason=error (grammar rejected tokens [1])" in line
    assert "Fix: set engine.backend=xgrammar or engine.backend=guidance" in line and "never switches" in line
    import sqlite3

    assert sqlite3.connect(run / "store.sqlite").execute("SELECT COUNT(*) FROM replies").fetchone() == (0,)
    assert not (run / "summary.json").exists() and "dataset:" not in err
    record("runtime", "the structured-output backend fails its start-up self-check",
           "fake engine: the self-check request ends with finish_reason=error", line, code)


def test_exclude_patterns_that_leave_no_generated_discipline(compose, world, tmp_path, monkeypatch, capsys, record):
    """The fake teacher names every field `names[i]-<number>`: excluding `names*` prunes them all
    after the root; the run ends with one line naming the patterns, not with an empty dataset."""
    cfg = compose(f"model.path={world.model}", "quality.enabled=false", "taxonomy.exclude=[names*]")
    code, line, _ = job(cfg, tmp_path / "run", FakeEngine(), monkeypatch, capsys)
    assert code == 2 and line.startswith("config error: taxonomy.exclude:") and "left no discipline" in line
    assert "names[0]-" in line and "Fix:" in line
    record("config", "exclude patterns that leave no discipline of a generated taxonomy",
           "taxonomy.exclude=[names*] (the fake teacher's field names)", line, code)


def test_lustre_mounted_without_flock_is_refused(compose, world, tmp_path, monkeypatch, capsys, record):
    """Its file locks hold on one node only, so two jobs on two nodes could write one run (the
    file system's answer is faked: this machine has no Lustre)."""
    from glan_local import store

    monkeypatch.setattr(store, "filesystem", lambda path: ("lustre", frozenset({"rw", "localflock"})))
    cfg = compose(f"model.path={world.model}", "quality.enabled=false")
    code, line, _ = job(cfg, tmp_path / "run", FakeEngine(), monkeypatch, capsys)
    assert code == 2 and line.startswith("config error: out_dir:") and "localflock" in line and "Fix:" in line
    record("config", "out_dir on Lustre mounted without -o flock (locks not cluster-wide)",
           "a file system reported as lustre with localflock (simulated)", line, code)


@pytest.mark.parametrize("args,culprit", [
    (["--reason", "cut"], "nothing in"),
    (["--level", "answers", "model.dtype=float16"], "model.dtype"),
    (["--level", "anwsers"], "--level"),
    (["--reason", "slow"], "--reason"),
], ids=["nothing-matches", "not-a-regen-setting", "unknown-level", "unknown-reason"])
def test_regen_refuses_bad_selections_before_the_model(world, record, args, culprit):
    p = subprocess.run([str(Path(sys.executable).parent / "glan-local-regen"), str(world.run), *args],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(world.dir / "guard")})
    line = one_line(p)
    assert p.returncode == 2 and culprit in line and "Fix:" in line, line
    assert snapshot(world.run) == world.snap
    record("config", f"glan-local-regen: {' '.join(args)}", f"glan-local-regen <run> {' '.join(args)}", line, 2)

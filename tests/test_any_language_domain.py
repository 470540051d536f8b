"""language=, prompt overrides, taxonomy subsets and flat discipline lists, with the FAKE
engine (tests/fakes.py). The real-engine run of all four is in test_any_language_e2e.py."""
import json

import pytest
import yaml

from glan_local.config import ConfigError
from glan_local.language import resolve
from test_orchestration import _read, _run


def test_language_codes_and_names_resolve():
    assert resolve("ko") == ("Korean", "ko")
    assert resolve("hu") == ("Hungarian", "hu")
    assert resolve("kor") == ("Korean", "ko")
    assert resolve("english") == ("English", "en")
    assert resolve("pt-BR") == ("Portuguese (BR)", "pt")
    assert resolve("Klingon") == ("Klingon", "tlh")          # ISO 639-3 has it
    assert resolve("Sindarin of Lothlorien") == ("Sindarin of Lothlorien", None)
    with pytest.raises(ConfigError) as e:
        resolve("xx")
    assert e.value.key == "language"


def _messages(run):
    from e2e import prompts

    return [(lvl, m) for lvl, _, m in prompts(run)]


def test_language_reaches_every_prompt_and_row(compose, fake_model, tmp_path):
    s, _ = _run(compose, fake_model, tmp_path / "run", "language=hu")
    msgs = _messages(tmp_path / "run")
    assert {lvl for lvl, _ in msgs} == {"taxonomy", "subjects", "syllabus", "questions", "answers"}
    assert all("Hungarian" in m[-1]["content"] and "Hungarian" in m[0]["content"] for _, m in msgs)
    rows = _read(tmp_path / "run" / "data" / "train.jsonl")
    assert {(r["language"], r["language_code"]) for r in rows} == {("Hungarian", "hu")}
    assert s["language"] == "hu"


def test_override_template_is_used_with_the_same_variables(compose, fake_model, tmp_path):
    tpl = tmp_path / "my_questions.j2"
    tpl.write_text("MARKER-42 {{ subject.name }} / {{ concepts | join(', ') }} / up to {{ last_session }} "
                   "/ {{ syllabus.sessions | length }} sessions / {{ language }}")
    _run(compose, fake_model, tmp_path / "run", f"prompts.questions={tpl}")
    q = [m for lvl, m in _messages(tmp_path / "run") if lvl == "questions"]
    assert q and all(m[-1]["content"].startswith("MARKER-42 ") for m in q)
    assert not any("MARKER-42" in m[-1]["content"] for lvl, m in _messages(tmp_path / "run") if lvl != "questions")


def _tax_file(tmp_path):
    p = tmp_path / "tax.yaml"
    p.write_text(yaml.safe_dump({"fields": [
        {"name": "Natural Sciences", "subfields": [{"name": "Chemistry", "disciplines": ["Organic Chemistry", "Biochemistry"]}]},
        {"name": "Services", "subfields": [{"name": "Retail", "disciplines": ["Retailing"]}]}]}))
    return p


def test_include_exclude_on_a_file_taxonomy(compose, fake_model, tmp_path):
    p = _tax_file(tmp_path)
    s, _ = _run(compose, fake_model, tmp_path / "a", f"taxonomy.file={p}", "taxonomy.include=[Natural*]",
                "taxonomy.exclude=[bio*]")
    assert {r["discipline"] for r in _read(tmp_path / "a" / "data" / "train.jsonl")} == {"Organic Chemistry"}
    assert s["taxonomy"]["disciplines"] == 1
    assert sorted(s["taxonomy"]["dropped"]) == ["Natural Sciences/Chemistry/Biochemistry", "Services/Retail/Retailing"]
    kept = yaml.safe_load((tmp_path / "a" / "taxonomy.yaml").read_text())
    assert kept["fields"][0]["subfields"][0]["disciplines"] == ["Organic Chemistry"]
    with pytest.raises(ConfigError) as e:
        _run(compose, fake_model, tmp_path / "b", f"taxonomy.file={p}", "taxonomy.include=[nothing*]")
    assert e.value.key == "taxonomy.include"


def test_exclude_prunes_a_generated_taxonomy_before_its_subtree_is_generated(compose, fake_model, tmp_path):
    s, eng = _run(compose, fake_model, tmp_path / "a")
    first_field = _read(tmp_path / "a" / "levels" / "taxonomy.jsonl")[0]["field"]
    pattern = "*" + first_field.split("-")[-1]        # fake names hold brackets, which are glob syntax
    s2, eng2 = _run(compose, fake_model, tmp_path / "b", f"taxonomy.exclude=['{pattern}']")
    assert s2["levels"]["taxonomy"]["planned"] == s["levels"]["taxonomy"]["planned"] - 2  # its sub-field and discipline lists
    assert first_field not in {r["field"] for r in _read(tmp_path / "b" / "data" / "train.jsonl")}
    assert s2["taxonomy"]["dropped"] == [first_field]


def test_flat_discipline_list_unspecified_or_inferred(compose, fake_model, tmp_path):
    p = tmp_path / "disciplines.txt"
    p.write_text("# my company's disciplines\nData Engineering\n\nTechnical Writing\n")
    _run(compose, fake_model, tmp_path / "a", f"taxonomy.file={p}")
    rows = _read(tmp_path / "a" / "data" / "train.jsonl")
    assert {r["discipline"] for r in rows} == {"Data Engineering", "Technical Writing"}
    assert {(r["field"], r["subfield"]) for r in rows} == {("unspecified", "unspecified")}
    s, eng = _run(compose, fake_model, tmp_path / "b", f"taxonomy.file={p}", "taxonomy.infer_parents=true")
    assert s["levels"]["taxonomy"]["planned"] == 2        # one classification request per discipline
    rows = _read(tmp_path / "b" / "data" / "train.jsonl")
    assert rows and all(r["field"] != "unspecified" and r["subfield"] for r in rows)
    p.write_text("A\nB\na\n")
    with pytest.raises(ConfigError) as e:
        _run(compose, fake_model, tmp_path / "c", f"taxonomy.file={p}")
    assert "line 3" in str(e.value)

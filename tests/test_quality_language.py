"""The language check of the quality step (issue 17): rows whose question or answer is not in the
rows' language are removed (or flagged), counted in the card and the report; a language the
detector does not know is said once. The detector choice is measured by
scripts/language_accuracy.py on tests/fixtures/language_samples.jsonl."""
import json
import os
import subprocess
import sys
from pathlib import Path
import pytest

from glan_local.config import QualityConfig
from glan_local.quality import langcheck
from glan_local.quality.pipeline import run_quality


FIX = Path(__file__).resolve().parent / "fixtures"
QUALITY = str(Path(sys.executable).parent / "glan-local-quality")

EN = [("Explain how a bill becomes law in a parliamentary system, naming the stages it passes through.",
       "A bill is drafted, read three times, examined in committee, passed by both chambers and signed."),
      ("Why does ice float on liquid water, and what would happen to lakes in winter if it did not?",
       "Ice is less dense than water because hydrogen bonds hold its molecules in an open lattice."),
      ("What is the derivative of x squared with respect to x, and which rule gives it?", "42")]
KO = [("조선 시대의 과거 제도가 사회 계층 이동에 어떤 영향을 미쳤는지 두 가지 예를 들어 설명하시오.",
       "과거 제도는 신분이 낮은 사람에게도 관직에 오를 기회를 주었지만, 실제로는 양반 계층에게 유리하였습니다."),
      ("인공지능 모델을 학습시킬 때 과적합을 줄이기 위해 사용할 수 있는 방법 세 가지를 제시하시오.",
       "정규화, 드롭아웃, 조기 종료가 대표적인 방법입니다.")]
HU = [("Hogyan befolyásolta az 1848-as forradalom a magyar jobbágyság helyzetét, és milyen törvények születtek?",
       "Az áprilisi törvények eltörölték a jobbágyságot, így a parasztok saját földjük tulajdonosai lettek."),
      ("Soroljon fel három módszert, amellyel egy gépi tanulási modell túlillesztése csökkenthető!",
       "Regularizáció, dropout és korai leállítás, mindegyiknek megvannak az előnyei és a hátrányai.")]
# What a tiny teacher writes: Chinese gibberish (the README's first run shipped one), and an
# English question answered in Chinese.
GIBBERISH = [("的的 学生 化学 是 是 的 了 在 一个 中 中 学生 的", "化学化学化学的的的是是是了了 学生 的 在 中"),
             ("Describe two causes of the French Revolution and how they were connected.",
              "法国大革命的原因包括财政赤字和粮食短缺，这两者相互影响，加剧了社会矛盾。")]


def _rows(with_codes=False):
    out = []
    for lang, pairs in (("en", EN), ("ko", KO), ("hu", HU), ("xx", GIBBERISH)):
        for q, a in pairs:
            r = {"id": f"{len(out):05d}", "discipline": "D", "question": q, "answer": a, "group": lang}
            if with_codes:
                r["language_code"] = "en" if lang == "xx" else lang   # the run asked for English there
            out.append(r)
    return out


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _quality(**language):
    """A QualityConfig with quality.language.<k> = v."""
    q = QualityConfig()
    q.report.embeddings = False
    for k, v in language.items():
        setattr(q.language, k, v)
    return q


@pytest.mark.parametrize("language,kept", [("English", "en"), ("ko", "ko"), ("Hungarian", "hu")])
def test_wrong_language_rows_are_removed_and_own_language_rows_kept(tmp_path, language, kept):
    src = _write(tmp_path / "in.jsonl", _rows())
    figures = run_quality(_quality(), tmp_path / "out", source=str(src), language=language)
    published = _jsonl(tmp_path / "out" / "data" / "train.jsonl")
    assert [r["group"] for r in published] == [kept] * len({"en": EN, "ko": KO, "hu": HU}[kept])
    removed = _jsonl(tmp_path / "out" / "quality" / "removed.jsonl")
    assert {x["reason"] for x in removed} == {"wrong-language"}
    assert len(removed) == len(_rows()) - len(published) == figures["removed"]["wrong-language"]
    lg = figures["language"]
    assert lg["wrong"] == len(removed) and lg["mode"] == "drop" and lg["detector"].startswith("py3langid")
    # The Chinese gibberish is confidently Chinese; the answer "42" is too short to judge.
    gib = next(x for x in removed if x["row"]["id"] == "00007")
    assert gib["detail"][0]["detected"] == "zh" and gib["detail"][0]["confidence"] >= 0.9
    if kept == "en":
        assert lg["not_judged"]["answer"] >= 1
        drift = next(x for x in removed if x["row"]["id"] == "00008")
        assert [d["field"] for d in drift["detail"]] == ["answer"]
    # The card and the report count them.
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"wrong-language {len(removed)}" in card and "language check (drop, py3langid" in card
    html = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "rows in another language" in html and "removed: wrong-language" in html


def test_each_row_in_its_own_language_and_flag_mode(tmp_path):
    """Without --language every row is judged against its language_code column: a merged ko + hu
    dataset keeps both; flag mode keeps every row and says what is wrong in a column."""
    src = _write(tmp_path / "in.jsonl", _rows(with_codes=True))
    figures = run_quality(_quality(), tmp_path / "a", source=str(src))
    assert [r["group"] for r in _jsonl(tmp_path / "a" / "data" / "train.jsonl")] == ["en"] * 3 + ["ko"] * 2 + ["hu"] * 2
    assert figures["language"]["expected"] == {"en": 5, "ko": 2, "hu": 2}
    figures = run_quality(_quality(mode="flag"), tmp_path / "b", source=str(src))
    rows = _jsonl(tmp_path / "b" / "data" / "train.jsonl")
    assert len(rows) == len(_rows()) and "wrong-language" not in figures["removed"]
    assert [r["wrong_language"] for r in rows][-2:] == ["question:zh,answer:zh", "answer:zh"]
    assert all(r["wrong_language"] == "" for r in rows[:-2])


def test_an_unknown_language_is_said_once_and_not_checked(tmp_path):
    said = []
    src = _write(tmp_path / "in.jsonl", _rows())
    figures = run_quality(_quality(), tmp_path / "out", source=str(src), language="Klingon", say=said.append)
    assert len([m for m in said if "does not know" in m]) == 1
    assert figures["language"]["not_checked"] == {"Klingon": len(_rows())}
    assert "wrong-language" not in figures["removed"]
    assert "not checked: 9 rows in Klingon" in (tmp_path / "out" / "README.md").read_text()
    # Off: nothing is judged.
    figures = run_quality(_quality(enabled=False), tmp_path / "off", source=str(src), language="en")
    assert figures["language"] == {"note": "off (quality.language.enabled=false)"}


def test_the_command_takes_the_language(tmp_path):
    src = _write(tmp_path / "mine.jsonl", [{"instruction": q, "output": a, "group": g}
                                          for g, (q, a) in [("ko", KO[0]), ("en", EN[0]), ("ko", KO[1])]])
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([QUALITY, str(src), "-o", str(tmp_path / "pub"), "--question-field", "instruction",
                        "--answer-field", "output", "--language", "ko", "report.enabled=false"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["group"] for r in _jsonl(tmp_path / "pub" / "data" / "train.jsonl")] == ["ko", "ko"]
    bad = subprocess.run([QUALITY, str(src), "--language", "xx"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("config error: --language: 'xx'"), bad.stderr


def test_the_rule_on_the_measured_samples():
    """The samples scripts/language_accuracy.py measures: no right-language text is called wrong,
    every judged text in another language is, code and numbers are never judged wrong."""
    samples = _jsonl(FIX / "language_samples.jsonl")
    for run in ("en", "ko", "hu"):
        for s in samples:
            v = langcheck.judge(s["text"], run, langcheck.MIN_CONFIDENCE)
            if s["lang"] == run:
                assert not v.wrong, (run, s["text"], v)
            elif s["kind"] == "code" and "SELECT" not in s["text"]:   # unfenced SQL reads as English
                assert not v.wrong, (run, s["text"], v)
            elif s["lang"] and v.checked:
                assert v.wrong, (run, s["text"], v)

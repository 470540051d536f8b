"""Language identification: is a question or an answer in the language the rows should be in?

The detector is py3langid (139 languages, its naive Bayes model inside the wheel, nothing
downloaded). scripts/language_accuracy.py compares it with lingua-language-detector and pycld2
on short questions and answers (tests/fixtures/language_samples.jsonl): at the threshold below
it removes no right-language text and misses the fewest wrong-language ones (5 of 744 judged,
lingua 24), is ~9x faster than lingua and its process peaks at ~140 MB instead of ~930 MB.

The rule: a text is in the wrong language when the detector gives the expected language at most
1 - min_confidence, i.e. it is that sure the text is NOT in the expected language. The other
reading, "sure it is some language X", misses what matters most: an English reply in a Korean
or Hungarian run is often short, and then no single language gets most of the belief, while
the expected one gets next to none. Random letters go the same way; a tiny teacher's Chinese
gibberish is confidently Chinese. Not judged (kept): texts under MIN_LETTERS letters ("42",
"x = 3", "Yes."), and texts the detector calls non-linguistic (its `zxx` class: code, formulas,
markup), whose share is left out of the others' so that code inside an answer does not count
against the answer's language. Fenced code, inline code, LaTeX, tags and URLs are cut out before
detection; unfenced code (a bare SQL query) reads as English to every detector measured.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Optional

from ..config import LanguageCheckConfig
from .text import flatten

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from ..config import QualityConfig

PACKAGE = "py3langid"
# At 0.98 no right-language sample of scripts/language_accuracy.py is removed (the closest,
# "Who wrote Les Misérables?", gets 0.049 for English: 2.5x the 0.02 limit).
MIN_CONFIDENCE = LanguageCheckConfig.min_confidence
# Weighted letters (see letters()): below this a text is not judged. 20 is about four words.
MIN_LETTERS = 20
# Long answers: the first MAX_CHARS say which language they are in; the rest costs time only
# (py3langid takes ~1 ms per 1,000 characters: the largest cost of the quality step).
MAX_CHARS = 1000
NOT_LANGUAGE = "zxx"
# ISO 639-1 codes the run may name that py3langid files under another code.
ALIASES = {"nb": "no", "fil": "tl"}
# Code, formulas, markup and links are in no language: an answer that is mostly code is judged
# by its prose only (and not at all when that is too short).
_NOT_PROSE = re.compile(r"```.*?(```|$)|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]"
                        r"|<[^>\n]*>|https?://\S+", re.S)


def prose(text: str) -> str:
    """The text without code blocks, inline code, LaTeX, tags and URLs, cut at MAX_CHARS."""
    return _NOT_PROSE.sub(" ", text[: 2 * MAX_CHARS])[:MAX_CHARS]


_LETTER = re.compile(r"[^\W\d_]")
# From U+2E80 on, letters are CJK, kana and Hangul, bar a few rare blocks; U+1100-11FF is jamo.
_DENSE = re.compile("[\u1100-\u11ff\u2e80-\U0010ffff]")


def letters(text: str) -> int:
    """Letters, with a Han, Hangul or kana character counted as 3: one of them says as much
    about the language as a short Latin word, so '미토콘드리아입니다' is judged and 'Yes, sir.' not."""
    found = "".join(_LETTER.findall(text))
    return len(found) + 2 * len(_DENSE.findall(found))


@dataclass
class Verdict:
    checked: bool = False         # False: too short or not language, so not judged
    wrong: bool = False
    detected: str = ""            # the most likely language (ISO 639 code)
    confidence: float = 0.0       # the detector's confidence in it
    expected_confidence: float = 0.0


def decide(probs: dict[str, float], expected: str, min_confidence: float) -> Verdict:
    """The verdict from one text's confidences (code -> value, summing to about 1)."""
    other = 1.0 - float(probs.get(NOT_LANGUAGE, 0.0))
    top = max((k for k in probs if k != NOT_LANGUAGE), key=lambda k: probs[k], default=None)
    if other < 0.5 or top is None:
        return Verdict()
    e = float(probs.get(ALIASES.get(expected, expected), 0.0)) / other
    return Verdict(True, e <= 1.0 - min_confidence, top, round(float(probs[top]) / other, 4), round(e, 4))


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def available() -> Optional[str]:
    """None when the detector can run, else why not."""
    import importlib.util

    return None if importlib.util.find_spec("py3langid") else f"{PACKAGE} is not installed (pip install {PACKAGE})"


def known(code: str) -> bool:
    return bool(code) and ALIASES.get(code, code) in set(_identifier().nb_classes) - {NOT_LANGUAGE}


def detector_name() -> str:
    from importlib.metadata import version

    return f"{PACKAGE} {version(PACKAGE)}"


def judge(text: str, expected: str, min_confidence: float) -> Verdict:
    text = prose(text)
    if letters(text) < MIN_LETTERS:
        return Verdict()
    return decide(dict(_identifier().rank(text)), expected, min_confidence)


class LanguageCheck:
    """One row at a time: each of `fields` judged against the row's expected language, which is
    `language` if given, else the row's language_code (or language) column, else the run's."""
    name = "language"

    def __init__(self, q: QualityConfig, language: Optional[str] = None, run_language: Optional[str] = None, say=None):
        lc = q.language
        self.mode = str(getattr(lc.mode, "value", lc.mode))
        self.min_confidence, self.fields = lc.min_confidence, list(lc.fields)
        self.adds = "wrong_language" if self.mode == "flag" else None
        self.say = say or (lambda m: None)
        self.given, self.run_language = language, run_language
        self.codes: dict[str, Optional[str]] = {}     # a language as written -> code the detector knows
        self.expected: dict[str, int] = {}
        self.not_checked: dict[str, int] = {}
        self.wrong = 0
        self.detected: dict[str, int] = {}
        self.by_field = {f: 0 for f in self.fields}
        self.not_judged = {f: 0 for f in self.fields}

    def _code(self, lang: str) -> Optional[str]:
        """The detector's code for a language name or code; None (said once) if it has none."""
        if lang not in self.codes:
            from ..errors import ConfigError
            from ..language import resolve

            try:
                code = resolve(lang)[1]
            except ConfigError:
                code = None
            self.codes[lang] = code if code and known(code) else None
            if self.codes[lang] is None:
                self.say(f"language check: {detector_name()} does not know the language '{lang}': "
                         "rows in it are not checked")
        return self.codes[lang]

    def _language(self, r: dict) -> Optional[str]:
        return self.given or r.get("language_code") or r.get("language") or self.run_language

    def check(self, r: dict) -> tuple[dict, Optional[dict]]:
        """(the row, flagged in mode flag; its removal record or None)."""
        lang = self._language(r)
        code = self._code(str(lang)) if lang else None
        if code is None:
            name = str(lang) if lang else "(none given)"
            if not lang and not self.not_checked:
                self.say("language check: no language for these rows (no language_code column, no --language): "
                         "not checked")
            self.not_checked[name] = self.not_checked.get(name, 0) + 1
            return ({**r, "wrong_language": ""} if self.mode == "flag" else r), None
        self.expected[code] = self.expected.get(code, 0) + 1
        bad = []
        for f in self.fields:
            if r.get(f) is None:
                continue
            v = judge(flatten(r.get(f)), code, self.min_confidence)
            self.not_judged[f] += not v.checked
            if v.wrong:
                self.by_field[f] += 1
                bad.append({"field": f, "detected": v.detected, "confidence": v.confidence, "expected": code,
                            "expected_confidence": v.expected_confidence})
        if bad:
            self.wrong += 1
            first = str(bad[0]["detected"])
            self.detected[first] = self.detected.get(first, 0) + 1
        if self.mode == "flag":
            return {**r, "wrong_language": ",".join(f"{b['field']}:{b['detected']}" for b in bad)}, None
        if bad:
            return r, {"reason": "wrong-language", "detail": bad, "row": r}
        return r, None

    def figures(self) -> dict:
        return {"detector": detector_name(), "mode": self.mode, "min_confidence": self.min_confidence,
                "fields": self.fields, "expected": self.expected, "wrong": self.wrong,
                "detected": dict(sorted(self.detected.items(), key=lambda kv: -kv[1])), "by_field": self.by_field,
                "not_judged": self.not_judged, "not_checked": self.not_checked}

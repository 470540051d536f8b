"""Language identification on short questions and answers: which library, which rule (issue 17).

    .venv/bin/pip install lingua-language-detector py3langid pycld2    # the candidates
    .venv/bin/python scripts/language_accuracy.py [--min-confidence 0.98] [-v]

Samples: tests/fixtures/language_samples.jsonl (5-40 word questions and answers in en, ko, hu,
de, pt, zh, ja, short answers with names, mixed text with code and formulas, gibberish).
Every library runs in its own process so that its peak RSS is its own.

Table 1: top-1 accuracy per language, texts/s (after warm-up), peak RSS.
Table 2: the quality step's rule (glan_local/quality/langcheck.py: wrong when the expected
language gets at most 1 - min_confidence; texts under MIN_LETTERS letters are not judged) in a
run of each of the seven languages over every sample: good rows removed (must be 0), rows in
another language kept, gibberish without a language removed. "top" is the other reading of
"wrong language", kept for comparison: the most likely language is another one with at least
min_confidence.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "fixtures" / "language_samples.jsonl"
LIBS = ("lingua", "lingua-low", "py3langid", "pycld2")
RUNS = ("en", "ko", "hu", "de", "pt", "zh", "ja")


def _backend(name: str):
    """text -> {ISO 639-1 code: confidence}."""
    if name.startswith("lingua"):
        from lingua import LanguageDetectorBuilder

        b = LanguageDetectorBuilder.from_all_languages()
        det = (b.with_low_accuracy_mode() if name == "lingua-low" else b).build()
        return lambda t: {v.language.iso_code_639_1.name.lower(): v.value
                          for v in det.compute_language_confidence_values(t) if v.value > 0}
    if name == "py3langid":
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return lambda t: {c: float(p) for c, p in ident.rank(t)}
    if name == "pycld2":
        import pycld2

        def cld(t):
            _, _, details = pycld2.detect(t)
            return {code: pct / 100 for _, code, pct, _ in details if code != "un" and pct}
        return cld
    raise ValueError(name)


def child(name: str) -> None:
    """Runs in its own process: the confidences of every sample, speed and peak RSS, as JSON."""
    import resource

    sys.path.insert(0, str(ROOT))
    from glan_local.quality.langcheck import prose

    texts = [prose(json.loads(line)["text"]) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    f = _backend(name)
    probs = [f(t) for t in texts]                  # also loads lazily loaded models
    t = time.perf_counter()
    for _ in range(5):
        for text in texts:
            f(text)
    speed = 5 * len(texts) / (time.perf_counter() - t)
    print(json.dumps({"probs": probs, "texts_per_s": round(speed),
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--min-confidence", type=float, help="default: the quality step's (langcheck.MIN_CONFIDENCE)")
    ap.add_argument("--libs", nargs="+", default=list(LIBS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every wrong decision")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    sys.path.insert(0, str(ROOT))
    from glan_local.quality.langcheck import MIN_CONFIDENCE, MIN_LETTERS, decide, letters, prose

    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    langs = [lg for lg in RUNS if any(r["lang"] == lg for r in rows)]
    c = args.min_confidence or MIN_CONFIDENCE
    print(f"{len(rows)} samples; rule: wrong when p(expected) <= {1 - c:.2f}; texts under {MIN_LETTERS} "
          f"letters (Han/Hangul/kana count 3) are not judged\n")
    head1 = f"{'library':<11}" + "".join(f"{lg:>7}" for lg in langs) + f"{'texts/s':>9}{'RSS MiB':>9}"
    head2 = (f"{'library':<11}{'rule':>5}{'good removed':>14}{'other removed':>15}{'other short':>13}"
             f"{'code removed':>14}{'gibberish removed':>19}")
    t1, t2 = [head1, "-" * len(head1)], [head2, "-" * len(head2)]
    for lib in args.libs:
        p = subprocess.run([sys.executable, __file__, "--child", lib], capture_output=True, text=True)
        if p.returncode:
            t1.append(f"{lib:<11} failed: {(p.stderr.strip().splitlines() or [p.returncode])[-1]}")
            continue
        res = json.loads(p.stdout)
        cells = []
        for lg in langs:
            mine = [pr for r, pr in zip(rows, res["probs"]) if r["lang"] == lg]
            cells.append(f"{sum(1 for pr in mine if pr and max(pr, key=pr.get) == lg)}/{len(mine)}")
        t1.append(f"{lib:<11}" + "".join(f"{x:>7}" for x in cells) + f"{res['texts_per_s']:>9}{res['rss_mib']:>9}")
        for rule in ("p", "top"):
            n = {"good": 0, "other": 0, "other_n": 0, "short": 0, "code": 0, "code_n": 0, "gib": 0, "gib_n": 0}
            bad = []
            for run in RUNS:
                for r, pr in zip(rows, res["probs"]):
                    short = letters(prose(r["text"])) < MIN_LETTERS
                    v = decide(pr, run, c)
                    if rule == "top":
                        v.wrong = v.checked and v.detected != run and v.confidence >= c
                    out = v.wrong and not short
                    what = f"{r['text'][:50]!r} {_top3(pr)}"
                    if not r["lang"]:
                        key = "code" if r["kind"] == "code" else "gib"
                        n[key + "_n"] += 1
                        n[key] += out
                        if out and key == "code":
                            bad.append(f"  {lib}/{rule} run {run}: removed code {what}")
                    elif r["lang"] == run:
                        n["good"] += out
                        if out:
                            bad.append(f"  {lib}/{rule} run {run}: removed {what}")
                    else:
                        n["other_n"] += 1
                        n["other"] += out
                        n["short"] += short
                        if not out and not short:
                            bad.append(f"  {lib}/{rule} run {run}: kept {r['lang']} {what}")
            frac = lambda a, b: f"{n[a]}/{n[b]}"  # noqa: E731
            t2.append(f"{lib:<11}{rule:>5}{n['good']:>14}{frac('other', 'other_n'):>15}{n['short']:>13}"
                      f"{frac('code', 'code_n'):>14}{frac('gib', 'gib_n'):>19}")
            if args.verbose:
                t2 += bad
    print("Top-1 accuracy per language (questions, answers, short answers, mixed text)\n" + "\n".join(t1))
    print(f"\nDecisions in a run of each of {', '.join(RUNS)} (min_confidence {c}); every sample in every run\n"
          + "\n".join(t2))
    return 0


def _top3(pr: dict) -> str:
    return " ".join(f"{k}={v:.2f}" for k, v in sorted(pr.items(), key=lambda kv: -kv[1])[:3])


if __name__ == "__main__":
    sys.exit(main())

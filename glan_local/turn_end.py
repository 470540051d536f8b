"""Where a teacher's reply ends: the chat template's end-of-turn token, against the EOS that the
tokenizer, config.json and generation_config.json name. The embedded teacher's conversion and
every run's start check it."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import CannotProduce


def _ids(value) -> list[int]:
    return [] if value is None else [int(v) for v in (value if isinstance(value, list) else [value])]


def turn_end(folder: Path) -> dict:
    """Which token ends an assistant turn in the chat template, and which EOS ids the tokenizer,
    config.json and generation_config.json name. turn_end_id is None when the template does not
    end a turn with a special token right after the reply (nothing to compare then)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    mark = "GLANTURNEND"
    text = str(tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": mark}],
                                       tokenize=False))
    tail = text[text.rfind(mark) + len(mark):] if mark in text else ""
    specials = {t for t in tok.all_special_tokens if t != tok.unk_token} | {
        t.content for t in tok.added_tokens_decoder.values() if t.special}
    end = max((t for t in specials if tail.startswith(t)), key=len, default=None)
    configs = {}
    for name in ("config.json", "generation_config.json"):
        p = folder / name
        configs[name] = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
    return {"turn_end": end, "turn_end_id": tok.convert_tokens_to_ids(end) if end else None,
            "tokenizer_eos": tok.eos_token, "tokenizer_eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id,
            "config_eos_ids": _ids(configs["config.json"].get("eos_token_id")),
            "generation_eos_ids": _ids(configs["generation_config.json"].get("eos_token_id"))}


def check_turn_end(folder: Path, strict: bool) -> str:
    """The token that ends a turn in the chat template must be the EOS of the tokenizer, of
    config.json and of generation_config.json, or replies end where the teacher does not stop.
    strict (the embedded teacher): all of them, and the pad token, name that one token; otherwise
    (a user's model) it must be one of the EOS ids vLLM stops on. Returns a one-line problem, or ""."""
    t = turn_end(folder)
    if t["turn_end_id"] is None:
        return ""
    stops = {t["tokenizer_eos_id"], *t["config_eos_ids"], *t["generation_eos_ids"]}
    agree = {t["tokenizer_eos_id"], t["pad_id"], *t["config_eos_ids"], *t["generation_eos_ids"]} == {t["turn_end_id"]}
    if (agree if strict else t["turn_end_id"] in stops):
        return ""
    problem = (f"'{folder}': the chat template ends a turn with {t['turn_end']} (id {t['turn_end_id']}), but the "
               f"tokenizer's EOS is {t['tokenizer_eos']} (id {t['tokenizer_eos_id']}), config.json's eos_token_id "
               f"{t['config_eos_ids']}, generation_config.json's {t['generation_eos_ids']}, pad id {t['pad_id']}")
    if strict:
        raise CannotProduce(problem, f"delete '{folder}' and run again to convert the embedded teacher anew; "
                            "if it persists, report the transformers version (a conversion bug)")
    return problem

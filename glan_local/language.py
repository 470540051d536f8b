"""`language=` takes a name ("Korean") or an ISO 639 code ("ko", "kor", "pt-BR"): prompts
need the name, the dataset card needs the code. pycountry holds the ISO tables."""
from __future__ import annotations

from functools import cache
from typing import Optional

from .errors import ConfigError


@cache
def resolve(value: str) -> tuple[str, Optional[str]]:
    """(name for prompts, ISO 639-1 code or None). A region subtag is kept in the name."""
    import pycountry

    text = str(value).strip()
    base, _, region = text.partition("-") if len(text.split("-")[0]) in (2, 3) else (text, "", "")
    lang = None
    if len(base) == 2:
        lang = pycountry.languages.get(alpha_2=base.lower())
    elif len(base) == 3:
        lang = pycountry.languages.get(alpha_3=base.lower())
    if lang is None:
        try:
            lang = pycountry.languages.lookup(text)
        except LookupError:
            lang = None
    if lang is None:
        if len(base) <= 3:
            raise ConfigError("language", f"'{text}' is not an ISO 639 language code",
                              "use a code such as en, ko, hu, or a language name")
        return text, None   # a name pycountry lacks: used as written
    name = lang.name + (f" ({region.upper()})" if region else "")
    return name, getattr(lang, "alpha_2", None) or getattr(lang, "alpha_3", None)

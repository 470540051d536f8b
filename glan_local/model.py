"""Finding and checking the teacher before any engine starts, and naming it for provenance."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .config import ConfigError


def resolve_model_path(model_cfg, key: str = "model") -> Path:
    """The teacher's local folder: the embedded default, a folder, or a hub id already cached.
    `key` is where the config names it (model, or answers.model), for the error messages."""
    if model_cfg.path is None:
        from .embedded import embedded_model_dir

        return embedded_model_dir()
    p = Path(os.path.expanduser(str(model_cfg.path)))
    if p.exists():
        return _check_folder(p, key)
    if str(model_cfg.path).count("/") == 1 and not str(model_cfg.path).startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(str(model_cfg.path), local_files_only=True))
            return _check_folder(cached, key)
        except Exception:
            raise ConfigError(f"{key}.path", f"'{model_cfg.path}' is neither a folder nor in the local Hugging Face cache",
                              f"download it first (huggingface-cli download {model_cfg.path}) or point {key}.path at a local folder")
    raise ConfigError(f"{key}.path", f"'{model_cfg.path}' does not exist", f"point {key}.path at a Hugging Face model folder")


def _check_folder(p: Path, key: str) -> Path:
    if not p.is_dir() or not (p / "config.json").exists():
        raise ConfigError(f"{key}.path", f"'{p}' is not a Hugging Face model folder (no config.json)",
                          f"point {key}.path at a folder holding config.json, tokenizer and weights")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise ConfigError(f"{key}.path", f"'{p}' holds no weights (*.safetensors or *.bin)",
                          f"point {key}.path at a complete model folder")
    if not _has_chat_template(p, key):
        raise ConfigError(f"{key}.path", f"'{p}' has no chat template (base model?)",
                          "use an instruct/chat model, or add a chat_template.jinja to the folder")
    return p


def _has_chat_template(p: Path, key: str) -> bool:
    if (p / "chat_template.jinja").exists() or (p / "chat_template.json").exists():
        return True
    tc = p / "tokenizer_config.json"
    if not tc.exists():
        return False
    try:
        return bool(json.loads(tc.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{key}.path", f"'{tc}' is not valid JSON ({e})",
                          "repair or re-download the model's tokenizer_config.json")


def model_identity(path: Path) -> dict:
    """Path and a hash of the files that define the model.

    Config and tokenizer files are hashed whole; weight files by name and size, since hashing
    140 GB of 70B weights at every start would cost minutes (`fingerprint_weights` does it fully).
    """
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        h.update(f.name.encode())
        if f.suffix in (".json", ".jinja", ".model", ".txt") and f.stat().st_size < 50_000_000:
            h.update(f.read_bytes())
        else:
            h.update(str(f.stat().st_size).encode())
    return {"path": str(path), "name": path.name, "files_sha256": h.hexdigest()}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_context(cfg, model_path: Path, templates, key: str = "model") -> None:
    """Fail before generation when a level's prompt plus reply can outgrow max_model_len, for
    the levels of the teacher configured at `key` (model, or answers.model).

    A prompt is bounded by its template's fixed text plus the replies of earlier levels it
    embeds (each at most that level's max_tokens); the check uses that bound.
    """
    if not any((model_path / f).exists() for f in TOKENIZER_FILES):   # found without importing transformers
        raise ConfigError(f"{key}.path", f"'{model_path}' has no tokenizer ({', '.join(TOKENIZER_FILES)})",
                          f"point {key}.path at a complete model folder, or copy the tokenizer files into it")
    from transformers import AutoTokenizer

    from .config import enabled_levels, teacher_of
    from .levels import ORDER

    try:
        tok = AutoTokenizer.from_pretrained(str(model_path))
    except Exception as e:   # no tokenizer files, a broken tokenizer.json, an unknown tokenizer class ...
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(f"{key}.path", f"cannot load the tokenizer of '{model_path}' ({detail})",
                          f"point {key}.path at a complete model folder (tokenizer.json or tokenizer.model "
                          "with tokenizer_config.json)")
    system = len(tok(templates.sources["system"])["input_ids"])
    for level in ORDER:
        if level.name not in enabled_levels(cfg) or level.name not in templates.sources \
                or teacher_of(cfg, level.name)[0] != key:
            continue
        limit = teacher_of(cfg, level.name)[1].max_model_len
        fixed = system + len(tok(templates.sources[level.name])["input_ids"]) + 32   # + chat markup
        embedded = sum(getattr(cfg.sampling, parent).max_tokens for parent in getattr(level, "CONTEXT_FROM", ()))
        reply = getattr(cfg.sampling, level.name).max_tokens
        need = fixed + embedded + reply
        if need > limit:
            parts = " + ".join(f"sampling.{p}.max_tokens" for p in getattr(level, "CONTEXT_FROM", ()))
            raise ConfigError(f"{key}.max_model_len",
                              f"{limit} is too small for the {level.name} level: its prompt can reach "
                              f"{fixed + embedded} tokens (template{' + ' + parts if parts else ''}) plus "
                              f"sampling.{level.name}.max_tokens={reply}",
                              f"raise {key}.max_model_len to {need} or more, or lower those max_tokens")

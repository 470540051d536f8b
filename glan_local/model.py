"""Finding and checking the teacher before any engine starts, and naming it for provenance."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import ConfigError
from .store import canonical

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import GlanConfig


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
            raise ConfigError(f"{key}.path", f"'{model_cfg.path}' is neither a folder nor in the local Hugging Face "
                              "cache", f"download it first (huggingface-cli download {model_cfg.path}) or point "
                              f"{key}.path at a local folder")
    raise ConfigError(f"{key}.path", f"'{model_cfg.path}' does not exist",
                      f"point {key}.path at a Hugging Face model folder")


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


# What defines a model in its folder: weights, and the small files that configure it. Anything
# else (README.md, LICENSE, images, training logs) and the folder's own name and place do not count.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
DEFINING_SMALL = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "vocab.txt",
                  "merges.txt", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
                  "model.safetensors.index.json", "pytorch_model.bin.index.json", "quantize_config.json")


def defining_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")
                  and (f.suffix in WEIGHT_SUFFIXES or f.name in DEFINING_SMALL))


def model_identity(path: Path, say: Optional[Callable[[str], None]] = None) -> dict:
    """What a model is, by content: the sha256 of every byte of each file that defines it
    (weights, config, tokenizer, chat template), and one digest over those. Hashed once per
    file, then remembered (hashing.py); a Hugging Face cache file is named by its sha256
    already. The folder's name and place, and files that do not define the model (a README
    added later), do not count: a model moved elsewhere is the same model."""
    from .hashing import sha256_files

    files = sha256_files(defining_files(path), f"the teacher's files in {path}", say)
    digest = hashlib.sha256(canonical(files).encode()).hexdigest()
    snapshot = _hf_snapshot(path)
    return {"path": str(path), "name": path.name, "sha256": digest, "files": files,
            "hashed": "sha256 of every byte of each file listed (weights, config, tokenizer, chat template)",
            **({"hf_snapshot": snapshot} if snapshot else {}), "identity": f"sha256:{digest}"}


def _hf_snapshot(path: Path) -> str:
    """'org/name@commit' for a folder of the Hugging Face cache (models--org--name/snapshots/<commit>)."""
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--") \
            and len(parts[-1]) == 40 and all(c in "0123456789abcdef" for c in parts[-1]):
        return parts[-3][len("models--"):].replace("--", "/") + "@" + parts[-1]
    return ""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_context(cfg: GlanConfig, model_path: Path, templates, key: str = "model") -> int:
    """Fail before generation when a level's prompt plus reply can outgrow max_model_len, for
    the levels of the teacher configured at `key` (model, or answers.model); returns the longest
    such bound, the length the engine's KV cache is sized against.

    A prompt is bounded by its template's fixed text plus the replies of earlier levels it
    embeds (each at most that level's max_tokens); the check uses that bound.
    """
    if not any((model_path / f).exists() for f in TOKENIZER_FILES):   # found without importing transformers
        raise ConfigError(f"{key}.path", f"'{model_path}' has no tokenizer ({', '.join(TOKENIZER_FILES)})",
                          f"point {key}.path at a complete model folder, or copy the tokenizer files into it")
    from transformers import AutoTokenizer

    from . import levels

    try:
        tok = AutoTokenizer.from_pretrained(str(model_path))
    except Exception as e:   # no tokenizer files, a broken tokenizer.json, an unknown tokenizer class ...
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(f"{key}.path", f"cannot load the tokenizer of '{model_path}' ({detail})",
                          f"point {key}.path at a complete model folder (tokenizer.json or tokenizer.model "
                          "with tokenizer_config.json)")
    system = len(tok(templates.sources["system"])["input_ids"])
    longest = 0
    for level in levels.ORDER:
        if level.name not in levels.enabled(cfg) or level.name not in templates.sources \
                or levels.teacher(cfg, level.name)[0] != key:
            continue
        limit = levels.teacher(cfg, level.name)[1].max_model_len
        fixed = system + len(tok(templates.sources[level.name])["input_ids"]) + 32   # + chat markup
        embedded = sum(getattr(cfg.sampling, parent).max_tokens for parent in level.CONTEXT_FROM)
        reply = getattr(cfg.sampling, level.name).max_tokens
        need = fixed + embedded + reply
        longest = max(longest, need)
        if need > limit:
            parts = " + ".join(f"sampling.{p}.max_tokens" for p in level.CONTEXT_FROM)
            raise ConfigError(f"{key}.max_model_len",
                              f"{limit} is too small for the {level.name} level: its prompt can reach "
                              f"{fixed + embedded} tokens (template{' + ' + parts if parts else ''}) plus "
                              f"sampling.{level.name}.max_tokens={reply}",
                              f"raise {key}.max_model_len to {need} or more, or lower those max_tokens")
    return longest

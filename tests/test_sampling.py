from itertools import combinations
from math import comb

import pytest

from glan_local import sampling


def total_count(sizes: list[int]) -> int:
    """The paper's count of distinct single- and two-session concept combinations."""
    return sum(sampling.single_session_count(m) for m in sizes) + \
        sum(sampling.two_session_count(a, b) for a, b in combinations(sizes, 2))


def test_single_session_count_matches_formula():
    for m in range(1, 9):
        assert sampling.single_session_count(m) == sum(comb(m, i) for i in range(1, 6))


def test_two_session_count_matches_formula():
    def s(n):
        return sum(comb(n, i) for i in range(2, 6))
    for m1 in range(1, 7):
        for m2 in range(1, 7):
            assert sampling.two_session_count(m1, m2) == s(m1 + m2) - s(m1) - s(m2)


@pytest.mark.parametrize("sizes", [[3, 2], [4, 4, 1], [5, 1, 2, 3]])
def test_enumeration_agrees_with_counts(sizes):
    combos = sampling._enumerate(sizes, two=True)
    assert len(combos) == len(set(combos)) == total_count(sizes)
    singles = [c for c in combos if len(c[0]) == 1]
    assert len(singles) == sum(sampling.single_session_count(m) for m in sizes)


def test_draw_is_seeded_distinct_and_valid():
    sizes = [5, 4, 5, 3, 5]
    a = sampling.draw(sizes, 40, 0.5, seed=7)
    assert a == sampling.draw(sizes, 40, 0.5, seed=7)
    assert a != sampling.draw(sizes, 40, 0.5, seed=8)
    assert len(a) == len(set(a)) == 40
    for sessions, concepts in a:
        assert {s for s, _ in concepts} == set(sessions)
        assert all(c < sizes[s] for s, c in concepts)
        if len(sessions) == 1:
            assert 1 <= len(concepts) <= 5
        else:
            assert 2 <= len(concepts) <= 5 and sessions[0] < sessions[1]


def test_draw_mix_follows_fraction():
    # Far from exhausting either space (930 single-session combinations), the mix is the fraction.
    sizes = [5] * 30
    draws = sampling.draw(sizes, 200, 0.25, seed=1)
    two = sum(len(s) == 2 for s, _ in draws)
    assert 30 <= two <= 70
    assert all(len(s) == 1 for s, _ in sampling.draw(sizes, 50, 0.0, seed=1))
    assert all(len(s) == 2 for s, _ in sampling.draw(sizes, 50, 1.0, seed=1))


def test_draw_exhausts_small_space_without_repeats():
    sizes = [1, 1]   # 2 single + 1 two-session combination
    got = sampling.draw(sizes, 10, 0.5, seed=3)
    assert sorted(got) == sorted(sampling._enumerate(sizes, two=True))
    only_one_session = sampling.draw([2], 5, 0.5, seed=3)   # two-session impossible
    assert len(only_one_session) == 3 and all(len(s) == 1 for s, _ in only_one_session)

"""Tests for minirl.metrics: hand-computed values, plus brute-force enumeration for the combinatorial ones."""

from __future__ import annotations

import math
from itertools import combinations, permutations

import pytest

from minirl.metrics import (
    auroc,
    bootstrap_ci,
    majority_success,
    mean_of_lowest,
    pass_at_k,
    random_success_at_k,
    success_at_k,
    welch_t,
    within_question_auroc,
)

T, F = True, False


# ---------------------------------------------------------------- auroc


def test_auroc_hand_case() -> None:
    # pos {0.9, 0.7}, neg {0.8, 0.6}: 0.9>0.8, 0.9>0.6, 0.7<0.8, 0.7>0.6 -> 3/4
    assert auroc([0.9, 0.8, 0.7, 0.6], [T, F, T, F]) == pytest.approx(0.75)


def test_auroc_ties_count_half() -> None:
    # pos {0.9, 0.5}, neg {0.5, 0.1}: 0.9>0.5 (1), 0.9>0.1 (1), 0.5=0.5 (0.5), 0.5>0.1 (1) -> 3.5/4
    assert auroc([0.9, 0.5, 0.5, 0.1], [T, T, F, F]) == pytest.approx(0.875)
    # all tied -> every pair counts 1/2
    assert auroc([1.0, 1.0, 1.0], [T, F, F]) == pytest.approx(0.5)


def test_auroc_separated_reversed_and_one_class() -> None:
    assert auroc([3.0, 2.0, 1.0, 0.0], [T, T, F, F]) == 1.0
    assert auroc([3.0, 2.0, 1.0, 0.0], [F, F, T, T]) == 0.0
    assert math.isnan(auroc([1.0, 2.0], [T, T]))
    assert math.isnan(auroc([1.0, 2.0], [F, F]))
    assert math.isnan(auroc([], []))


def test_auroc_matches_pairwise_count() -> None:
    scores = [0.3, 0.1, 0.3, 0.7, 0.5, 0.1, 0.7, 0.2, 0.3]
    labels = [T, F, F, T, F, T, F, T, T]
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    assert auroc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


# ---------------------------------------------------------------- within-question auroc


def test_within_question_auroc_exposes_difficulty_confound() -> None:
    # "easy": 6 right at 0.9, 1 wrong at 0.95 -> within AUROC 0/6 = 0
    # "hard": 6 wrong at 0.1, 1 right at 0.05 -> within AUROC 0/6 = 0
    # "solo": 1 right at 0.7, no wrong sample -> skipped
    scores = [0.9] * 6 + [0.95] + [0.1] * 6 + [0.05] + [0.7]
    labels = [T] * 6 + [F] + [F] * 6 + [T] + [T]
    groups = ["easy"] * 7 + ["hard"] * 7 + ["solo"]
    # pooled: pos = 6 x 0.9, 0.05, 0.7 (8); neg = 0.95, 6 x 0.1 (7); 56 pairs
    # each 0.9 beats the six 0.1s (36), 0.7 beats the six 0.1s (6), 0.05 beats none -> 42/56 = 0.75
    assert auroc(scores, labels) == pytest.approx(0.75)
    assert within_question_auroc(scores, labels, groups) == (0.0, 2)


def test_within_question_auroc_mean_and_empty() -> None:
    # group 1: perfect (1.0); group 2: reversed (0.0) -> mean 0.5 over 2 groups
    mean, n = within_question_auroc([2.0, 1.0, 2.0, 1.0], [T, F, F, T], [1, 1, 2, 2])
    assert (mean, n) == (pytest.approx(0.5), 2)
    mean, n = within_question_auroc([1.0, 2.0], [T, T], ["a", "b"])
    assert math.isnan(mean) and n == 0


# ---------------------------------------------------------------- pass@k


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Items 0..c-1 are correct; fraction of k-subsets holding at least one of them."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 3, 2) == 1.0  # n - c = 1 < k = 2
    assert pass_at_k(4, 0, 3) == 0.0  # 1 - C(4,3)/C(4,3)
    assert pass_at_k(4, 2, 0) == 0.0  # picking nothing never succeeds


@pytest.mark.parametrize("n,c,k", [(5, 1, 1), (5, 2, 3), (6, 3, 2), (7, 2, 4), (8, 0, 3), (8, 8, 1), (6, 1, 6)])
def test_pass_at_k_matches_enumeration(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k))


@pytest.mark.parametrize("n,c,k", [(3, 1, 4), (3, 4, 1), (-1, 0, 0), (3, -1, 1), (3, 1, -1)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ---------------------------------------------------------------- success@k


def _brute_success_at_k(scores: list[float], correct: list[bool], k: int) -> float:
    """Average over all tie-breaking orders: stable sort of each permutation by -score, take the top k."""
    perms = list(permutations(range(len(scores))))
    hits = 0
    for perm in perms:
        ranked = sorted(perm, key=lambda i: -scores[i])
        hits += any(correct[i] for i in ranked[:k])
    return hits / len(perms)


def test_success_at_k_clear_cases() -> None:
    assert success_at_k([0.9, 0.5, 0.1], [T, F, F], 1) == 1.0  # correct sample on top
    assert success_at_k([0.9, 0.5, 0.1], [F, T, F], 1) == 0.0  # wrong one on top, k = 1
    assert success_at_k([0.9, 0.5, 0.1], [F, T, F], 2) == 1.0  # top 2 reaches the correct one
    assert success_at_k([0.9, 0.5, 0.1], [F, F, F], 3) == 0.0  # nothing correct
    assert success_at_k([0.9, 0.5], [T, F], 0) == 0.0


def test_success_at_k_tie_hand_values() -> None:
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    correct = [F, T, F, F, T]
    # k=2: 0.9 wrong, 1 slot among the 3 tied (1 right): 1 - C(2,1)/C(3,1) = 1 - 2/3
    assert success_at_k(scores, correct, 2) == pytest.approx(1 / 3)
    # k=3: 2 slots among the 3 tied: 1 - C(2,2)/C(3,2) = 1 - 1/3
    assert success_at_k(scores, correct, 3) == pytest.approx(2 / 3)
    # k=4: the whole tied level fits and holds a right one
    assert success_at_k(scores, correct, 4) == 1.0


@pytest.mark.parametrize(
    "scores,correct",
    [
        ([0.9, 0.5, 0.5, 0.5, 0.1], [F, T, F, F, T]),
        ([1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [F, F, T, F, T, F]),
        ([0.3, 0.3, 0.7, 0.3, 0.7, 0.1], [T, F, F, F, F, T]),
        ([0.2, 0.2, 0.2, 0.2, 0.2], [F, T, F, T, F]),
    ],
)
def test_success_at_k_matches_tie_breaking_enumeration(scores: list[float], correct: list[bool]) -> None:
    for k in range(len(scores) + 1):
        assert success_at_k(scores, correct, k) == pytest.approx(_brute_success_at_k(scores, correct, k)), k


def test_success_at_k_all_equal_is_random_pick() -> None:
    correct = [F, T, F, F, T, F, F]
    for k in range(len(correct) + 1):
        expected = pass_at_k(7, 2, k)
        assert success_at_k([0.0] * 7, correct, k) == pytest.approx(expected)
        assert random_success_at_k(correct, k) == pytest.approx(expected)
    assert random_success_at_k([F, T, F, F], 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6


def test_success_at_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        success_at_k([0.1, 0.2], [T, F], 3)
    with pytest.raises(ValueError):
        success_at_k([0.1, 0.2], [T], 1)


# ---------------------------------------------------------------- majority vote


def test_majority_success_hand_cases() -> None:
    assert majority_success([1.0, 1.0, 2.0], [T, T, F]) == 1.0  # 1 wins 2-1, right
    assert majority_success([1.0, 2.0, 2.0], [T, F, F]) == 0.0  # 2 wins 2-1, wrong
    assert majority_success([1.0, 1.0, 2.0, 2.0], [T, T, F, F]) == pytest.approx(0.5)  # 2-2 tie: 1/2
    assert majority_success([1.0, 2.0, 3.0], [F, T, F]) == pytest.approx(1 / 3)  # 3-way tie: 1/3


def test_majority_success_none_never_votes() -> None:
    # three Nones outnumber the single 7, but only 7 votes
    assert majority_success([None, None, None, 7.0], [F, F, F, T]) == 1.0
    # None ignored: 4 vs 5 tie 1-1 -> 1/2
    assert majority_success([None, 4.0, 5.0], [F, T, F]) == pytest.approx(0.5)
    assert majority_success([None, None], [F, F]) == 0.0
    assert majority_success([], []) == 0.0


# ---------------------------------------------------------------- bootstrap, t, correlation


@pytest.mark.parametrize("values", [[0.0, 1.0, 1.0, 0.0, 1.0], [0.2, 0.9, 0.4, 0.4, 0.7, 0.1, 0.5], [3.0, 5.0]])
def test_bootstrap_ci_contains_mean_and_is_deterministic(values: list[float]) -> None:
    lo, hi = bootstrap_ci(values, n_boot=500, seed=3)
    mean = sum(values) / len(values)
    assert lo <= mean <= hi
    assert lo < hi
    assert min(values) <= lo and hi <= max(values)
    assert bootstrap_ci(values, n_boot=500, seed=3) == (lo, hi)


def test_bootstrap_ci_constant_and_empty() -> None:
    assert bootstrap_ci([2.0, 2.0, 2.0], n_boot=200) == (2.0, 2.0)
    lo, hi = bootstrap_ci([0.3] * 10, n_boot=200)
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_ci_narrows_with_more_questions() -> None:
    small = [0.0, 1.0] * 5
    large = [0.0, 1.0] * 200
    lo_s, hi_s = bootstrap_ci(small, seed=1)
    lo_l, hi_l = bootstrap_ci(large, seed=1)
    assert hi_l - lo_l < hi_s - lo_s


def test_bootstrap_ci_of_another_statistic_drops_nan_resamples() -> None:
    assert bootstrap_ci([1.0, 5.0], n_boot=200, statistic=max) == (1.0, 5.0)  # max of a resample: 1 or 5
    assert bootstrap_ci([1.0, 1.0], statistic=max) == (1.0, 1.0)
    assert bootstrap_ci([1.0, 2.0], statistic=lambda xs: math.nan if 2.0 in xs else 1.0) == (1.0, 1.0)  # only [1, 1]
    assert all(math.isnan(x) for x in bootstrap_ci([2.0], statistic=lambda xs: math.nan))


def test_welch_t_hand_values() -> None:
    # means 2 and 5, variances 1 and 1: -3 / sqrt(1/3 + 1/3) = -3 / 0.81650 = -3.674235
    assert welch_t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(-3.674235, abs=1e-6)
    # a: mean 2.5, var (2.25+0.25+0.25+2.25)/3 = 5/3; b: mean 3, var 2
    # -0.5 / sqrt(5/12 + 2/2) = -0.5 / 1.190238 = -0.420084
    assert welch_t([1.0, 2.0, 3.0, 4.0], [2.0, 4.0]) == pytest.approx(-0.420084, abs=1e-6)
    assert math.isnan(welch_t([1.0], [1.0, 2.0]))
    assert math.isnan(welch_t([1.0, 1.0], [2.0, 2.0]))  # zero denominator


# ---------------------------------------------------------------- mean_of_lowest


def test_mean_of_lowest_hand_values() -> None:
    assert mean_of_lowest([3.0, -1.0, 2.0, -4.0, 0.5], 2) == -2.5  # (-4 + -1) / 2
    assert mean_of_lowest([3.0, -1.0, 2.0], 1) == -1.0  # k = 1: the minimum
    assert mean_of_lowest([3.0, -1.0, 2.0], 5) == pytest.approx(4.0 / 3)  # fewer values than k: the mean


@pytest.mark.parametrize("values, k", [([], 3), ([1.0, 2.0], 0)])
def test_mean_of_lowest_rejects_bad_arguments(values: list[float], k: int) -> None:
    with pytest.raises(ValueError):
        mean_of_lowest(values, k)

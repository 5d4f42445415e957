"""Evaluation metrics: ranking quality of a reward, best-of-N success, and small statistics (method.md M5, M7).

Everything here is pure Python on plain sequences, so the numbers in the reports can be checked by hand:

- `auroc`, `within_question_auroc`: does a score separate right from wrong samples (M7)? The within-question
  version guards against a score that only tracks how hard a question is.
- `pass_at_k`, `success_at_k`, `random_success_at_k`, `majority_success`: best-of-N reranking (M5), all exact
  expectations over random tie-breaking, so no random seed is needed.
- `bootstrap_ci`, `welch_t`: the few statistics the reports need.

Left out on purpose: numpy/scipy, p-values, multiple-comparison corrections, weighted variants, and any
plotting. Inputs are short lists (at most some thousands of items), so clarity wins over speed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence

NAN = float("nan")


# ---------------------------------------------------------------- ranking quality (M7)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """method.md M7: P(score of a random positive > score of a random negative), ties counting 1/2.

    Mann-Whitney: AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), where R_pos is the sum of the
    (1-based, tie-averaged) ranks of the positives. O(n log n). NaN if either class is empty.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum_pos = 0.0
    start = 0
    while start < len(order):  # one block of tied scores at a time
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        avg_rank = (start + end) / 2 + 1  # ranks start..end (0-based) share their average, 1-based
        rank_sum_pos += avg_rank * sum(1 for i in order[start : end + 1] if labels[i])
        start = end + 1
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def within_question_auroc(
    scores: Sequence[float], labels: Sequence[bool], groups: Sequence[Hashable]
) -> tuple[float, int]:
    """method.md M7: mean over questions of the AUROC among that question's samples.

    Only questions with both a right and a wrong sample count. Returns (mean, number of such questions),
    or (nan, 0) if there are none. Pooled AUROC can be high only because the score tracks difficulty.
    """
    if not len(scores) == len(labels) == len(groups):
        raise ValueError("scores, labels and groups must have the same length")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    per_group = [auroc([scores[i] for i in idx], [labels[i] for i in idx]) for idx in members.values()]
    valid = [a for a in per_group if not math.isnan(a)]
    if not valid:
        return NAN, 0
    return sum(valid) / len(valid), len(valid)


# ---------------------------------------------------------------- best-of-N (M5)


def pass_at_k(n: int, c: int, k: int) -> float:
    """method.md M5 (Chen et al. 2021): P(at least one of k draws without replacement from n, c correct, is correct).

    pass@k = 1 - C(n - c, k) / C(n, k), and 1.0 when n - c < k.
    """
    if n < 0 or c < 0 or k < 0 or c > n or k > n:
        raise ValueError(f"need 0 <= c <= n and 0 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def success_at_k(scores: Sequence[float], correct: Sequence[bool], k: int) -> float:
    """method.md M5 success@k|N: P(some correct sample among the top k by score), ties broken uniformly at random.

    Exact: walk score levels from high to low, taking whole levels while they fit (1.0 as soon as one holds a
    correct sample). At the level that does not fit (m items, c correct, j slots left): 1 - C(m-c, j) / C(m, j).
    """
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness flags")
    if k < 0 or k > len(scores):
        raise ValueError(f"need 0 <= k <= N={len(scores)}, got k={k}")
    levels: dict[float, list[bool]] = {}
    for s, ok in zip(scores, correct, strict=True):
        levels.setdefault(s, []).append(bool(ok))
    slots = k
    for s in sorted(levels, reverse=True):
        if slots == 0:
            break
        m, c = len(levels[s]), sum(levels[s])
        if m <= slots:  # the whole level is taken
            if c > 0:
                return 1.0
            slots -= m
        else:  # a uniform random j = slots of the m tied items are taken
            return pass_at_k(m, c, slots)
    return 0.0


def random_success_at_k(correct: Sequence[bool], k: int) -> float:
    """method.md M5 baseline: success of k samples picked uniformly at random = pass_at_k(N, sum(correct), k)."""
    return pass_at_k(len(correct), sum(1 for ok in correct if ok), k)


def majority_success(answers: Sequence[float | None], correct: Sequence[bool]) -> float:
    """method.md M5 majority vote: expected correctness of the most frequent final answer.

    None never votes. Ties among the most frequent answers are broken uniformly at random, so the result is
    the mean correctness of the tied answers (each answer's correctness is that of its first sample).
    0.0 if no sample has an answer.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    votes: dict[float, int] = {}
    is_right: dict[float, bool] = {}
    for a, ok in zip(answers, correct, strict=True):
        if a is None:
            continue
        votes[a] = votes.get(a, 0) + 1
        is_right.setdefault(a, bool(ok))
    if not votes:
        return 0.0
    top = max(votes.values())
    winners = [a for a, v in votes.items() if v == top]
    return sum(is_right[a] for a in winners) / len(winners)


def mean_of_lowest(values: Sequence[float], k: int) -> float:
    """The mean of the `k` lowest values (all of them when fewer): a soft minimum. A trace with one wrong step is
    as bad as its worst tokens, which the mean over every token dilutes and the single minimum reads noisily."""
    if not values or k < 1:
        raise ValueError(f"mean_of_lowest needs values and k >= 1 (got {len(values)} values, k = {k})")
    lowest = sorted(values)[:k]
    return _mean(lowest)


# ---------------------------------------------------------------- statistics


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    """Sample variance, ddof = 1: sum (x - mean)^2 / (n - 1)."""
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default): position q (n - 1)."""
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (pos - lo) * (sorted_xs[hi] - sorted_xs[lo])


def bootstrap_ci(
    values: Sequence, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
    statistic: Callable[[list], float] = _mean,
) -> tuple[float, float]:
    """method.md M5/M7 reporting: percentile bootstrap (1 - alpha) interval of a statistic of per-question values
    (by default their mean; e.g. an AUROC over the questions' samples).

    Resample the n questions with replacement n_boot times (random.Random(seed)), compute the statistic of each
    resample, and return the alpha/2 and 1 - alpha/2 quantiles. Resamples where the statistic is NaN (an AUROC
    without a right sample) are dropped. (nan, nan) for empty input.
    """
    if not values:
        return NAN, NAN
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(x for x in (statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(n_boot))
                   if not math.isnan(x))
    if not stats:
        return NAN, NAN
    return _quantile(stats, alpha / 2), _quantile(stats, 1 - alpha / 2)


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """method.md M7: Welch's t = (mean(a) - mean(b)) / sqrt(var_a / n_a + var_b / n_b), sample variances (ddof 1).

    NaN if either side has fewer than 2 items or the denominator is 0.
    """
    if len(a) < 2 or len(b) < 2:
        return NAN
    se = math.sqrt(_var(a) / len(a) + _var(b) / len(b))
    if se == 0:
        return NAN
    return (_mean(a) - _mean(b)) / se

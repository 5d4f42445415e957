"""Perturbed experts (M3): an expert solution with one thing made wrong, the discriminator's hardest negatives
and the ground truth of error localisation (M7).

Each rule returns (perturbed text, (start, end) character span of the first change), or None when it does not
apply: `result` corrupts a step's computed value, `operator` flips an operator (the written result kept, so the
step no longer adds up), `final` nudges the answer after `####`, `numbers` shifts a quarter of the numbers.
`perturb` applies one, named or at random.
"""

from __future__ import annotations

import random
import re

from minirl.data import MAX_DIGITS, DataError, count_digits

CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>(-?\d[\d,]*(?:\.\d+)?)")


def perturb_result(text: str, rng: random.Random) -> tuple[str, tuple[int, int]] | None:
    """Corrupt one step's result: the value after a `<<a op b=r>>` annotation (and the
    annotation itself), as if the step was computed wrong."""
    calcs = list(CALC.finditer(text))
    if not calcs:
        return None
    m = rng.choice(calcs)
    value = _as_number(m.group(3))
    if value is None:
        return None
    new = _fmt(value + rng.choice([-2, -1, 1, 2]))
    repl = f"<<{m.group(1)}={new}>>{new}"
    return text[: m.start()] + repl + text[m.end():], (m.start() + len(m.group(1)) + 3, m.start() + len(repl))


def perturb_operator(text: str, rng: random.Random) -> tuple[str, tuple[int, int]] | None:
    """Flip one arithmetic operator between two digits (in a step or its `<<...>>` annotation);
    the written result is kept, so the step no longer adds up."""
    spots = [m for m in re.finditer(r"(?<=\d)\s*([+\-*/x])\s*(?=\d)", text)]
    if not spots:
        return None
    m = rng.choice(spots)
    op = m.group(1)
    new = rng.choice([o for o in "+-*/" if o != op])
    i = m.start(1)
    return text[:i] + new + text[i + 1:], (i, i + 1)


def perturb_final(text: str, rng: random.Random) -> tuple[str, tuple[int, int]] | None:
    """Nudge the final answer after `####` by +-1."""
    m = re.search(r"####\s*(-?[\d,.]+)", text)
    value = _as_number(m.group(1)) if m else None
    if m is None or value is None:
        return None
    new = _fmt(value + rng.choice([-1, 1]))
    return text[: m.start(1)] + new + text[m.end(1):], (m.start(1), m.start(1) + len(new))


def perturb_numbers(text: str, rng: random.Random) -> tuple[str, tuple[int, int]] | None:
    """Shift about a quarter of the numbers in the solution by +-1..2 (at least one); a number longer than
    `MAX_DIGITS` is never one of them."""
    nums = [m for m in re.finditer(rf"(?<![\d.])\d{{1,{MAX_DIGITS}}}(?![\d.])", text)]
    if not nums:
        return None
    chosen = sorted(rng.sample(nums, max(1, len(nums) // 4)), key=lambda m: m.start())
    pieces, last = [], 0
    for m in chosen:
        new = int(m.group()) + rng.choice([-2, -1, 1, 2])
        pieces += [text[last: m.start()], str(new if new >= 0 else int(m.group()) + 1)]
        last = m.end()
    first = chosen[0].start()  # nothing before the first changed number moved
    return "".join(pieces) + text[last:], (first, first + len(pieces[1]))


PERTURBATIONS = {"result": perturb_result, "operator": perturb_operator, "final": perturb_final,
                 "numbers": perturb_numbers}


def perturb(text: str, rng: random.Random, kind: str | None = None) -> tuple[str, tuple[int, int], str] | None:
    """Apply one perturbation rule (`kind`, or a random applicable one). Returns
    (text, span of the first change, kind), never the original text unchanged."""
    if kind is not None and kind not in PERTURBATIONS:
        raise DataError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")
    kinds = [kind] if kind else rng.sample(list(PERTURBATIONS), len(PERTURBATIONS))
    for k in kinds:
        got = PERTURBATIONS[k](text, rng)
        if got is not None and got[0] != text:
            return got[0], got[1], k
    return None


def _as_number(s: str) -> float | None:
    """The value of a number as a solution writes it, or None (not a number, or longer than `MAX_DIGITS`)."""
    if count_digits(s) > MAX_DIGITS:
        return None
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"

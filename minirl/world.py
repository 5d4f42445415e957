"""A miniature world of GSM8K-style word problems whose base policy errs *systematically*.

Why this exists (method.md M9): a tiny policy whose only mistakes are sampling slips is
already caught by its own log-prob, so a learned reward has nothing to add. Real LLMs
make *confident reasoning errors*. We reproduce that cheaply: the base policy is
pretrained on a corpus in which wording-tied **misconceptions** are applied at a fixed
rate (0.6 by default): "half as many" solved by doubling, "gives away" by adding, and so
on. Sampled at T = 1 it is sometimes right; greedily it is mostly wrong, and confidently.

The world has three disjoint parts, all drawn from one seed:
  - expert demonstrations: clean solutions (optionally leaving one misconception kind's
    problems out, to show that a discriminator learns only the contrasts it is shown);
  - a pretraining corpus with misconceptions applied at `misconception_rate`;
  - held-out test problems.

Every problem is a chain of 2-3 steps written in GSM8K's format:
    "Ben has 6*3 = <<6*3=18>>18 books.\n ... #### 24"
Arithmetic stays small (results mostly under 100) so that computing is not the bottleneck.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from minirl.config import UserError

# The five named misconceptions; each is tied to a wording cue in the question.
MISCONCEPTIONS = ("half_as_many", "gives_away", "times_as_many", "how_many_more", "forgot_last_step")

NAMES = ["Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Mo"]
ITEMS = ["apples", "books", "coins", "eggs", "pens", "shells"]
VERBS_LOSE = ["gives away", "loses"]


@dataclass
class Step:
    """One solution line: `before a<op>b = <<a<op>b=r>>r after`."""

    a: int
    op: str  # one of + - * /
    b: int
    before: str
    after: str

    @property
    def result(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b, "/": self.a // self.b}[self.op]

    def render(self) -> str:
        r = self.result
        return f"{self.before}{self.a}{self.op}{self.b} = <<{self.a}{self.op}{self.b}={r}>>{r}{self.after}"


# The operation a misconception writes instead of the right one, keyed by cue.
WRONG_OP = {"half_as_many": ("/", "*"), "gives_away": ("-", "+"), "times_as_many": ("*", "+"),
            "how_many_more": ("-", "+")}


def step(a: int, op: str, b: int, before: str, after: str, cue: str, held: set[str]) -> Step:
    """A step whose operation `op` is replaced by the misconception's when `cue` is held."""
    if cue in held and WRONG_OP[cue][0] == op:
        op = WRONG_OP[cue][1]
    return Step(a, op, b, before, after)


@dataclass
class Problem:
    question: str
    kind: str  # the template's name
    cues: list[str]  # the misconceptions this wording can trigger
    solve: Callable[[set[str]], list[Step]]  # the solution of a student holding these misconceptions

    @property
    def steps(self) -> list[Step]:
        return self.solve(set())

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    def solution(self, held: frozenset[str] | set[str] = frozenset()) -> str:
        """GSM8K format: one line per step, then `#### answer`. A held `forgot_last_step`
        stops one step early and reports the intermediate result."""
        steps = self.solve(set(held))
        if "forgot_last_step" in held and "forgot_last_step" in self.cues:
            steps = steps[:-1]
        return "\n".join(s.render() for s in steps) + f"\n#### {steps[-1].result}"


# ---------------------------------------------------------------- templates
# Each template draws its numbers, then defines `solve(held)`: the chain of steps, with each
# step's misconception named, so a wrong intermediate value flows into the later steps.

def _half_total(rng: random.Random, p: str, q: str, item: str) -> Problem:
    n = 2 * rng.randint(2, 15)

    def solve(held: set[str]) -> list[Step]:
        s1 = step(n, "/", 2, f"{q} has ", f" {item}.", "half_as_many", held)
        return [s1, Step(n, "+", s1.result, "Together they have ", f" {item}.")]

    question = f"{p} has {n} {item}. {q} has half as many {item} as {p}. How many {item} do they have altogether?"
    return Problem(question, "half_total", ["half_as_many", "forgot_last_step"], solve)


def _buy_then_lose(rng: random.Random, p: str, q: str, item: str) -> Problem:
    n, k = rng.randint(5, 20), rng.randint(2, 9)
    m, verb = rng.randint(2, min(12, n + k - 1)), rng.choice(VERBS_LOSE)

    def solve(held: set[str]) -> list[Step]:
        s1 = Step(n, "+", k, f"After buying, {p} has ", f" {item}.")
        return [s1, step(s1.result, "-", m, f"After that, {p} has ", f" {item}.", "gives_away", held)]

    question = (f"{p} has {n} {item}. {p} buys {k} more {item}. Then {p} {verb} {m} {item}. "
                f"How many {item} does {p} have now?")
    return Problem(question, "buy_then_lose", ["gives_away"], solve)


def _times_total(rng: random.Random, p: str, q: str, item: str) -> Problem:
    n, t = rng.randint(2, 9), rng.randint(2, 4)

    def solve(held: set[str]) -> list[Step]:
        s1 = step(n, "*", t, f"{q} has ", f" {item}.", "times_as_many", held)
        return [s1, Step(n, "+", s1.result, "Together they have ", f" {item}.")]

    question = f"{p} has {n} {item}. {q} has {t} times as many {item} as {p}. How many {item} do they have altogether?"
    return Problem(question, "times_total", ["times_as_many", "forgot_last_step"], solve)


def _times_more(rng: random.Random, p: str, q: str, item: str) -> Problem:
    n, t = rng.randint(2, 9), rng.randint(2, 4)

    def solve(held: set[str]) -> list[Step]:
        s1 = step(n, "*", t, f"{q} has ", f" {item}.", "times_as_many", held)
        return [s1, step(s1.result, "-", n, f"{q} has ", f" more {item} than {p}.", "how_many_more", held)]

    question = (f"{p} has {n} {item}. {q} has {t} times as many {item} as {p}. "
                f"How many more {item} does {q} have than {p}?")
    return Problem(question, "times_more", ["times_as_many", "how_many_more"], solve)


def _lose_more(rng: random.Random, p: str, q: str, item: str) -> Problem:
    n, k = rng.randint(15, 30), rng.randint(2, 9)
    m, verb = rng.randint(5, n - k - 1), rng.choice(VERBS_LOSE)

    def solve(held: set[str]) -> list[Step]:
        s1 = step(n, "-", k, f"{p} has ", f" {item} left.", "gives_away", held)
        return [s1, step(s1.result, "-", m, f"{p} has ", f" more {item} than {q}.", "how_many_more", held)]

    question = (f"{p} has {n} {item} and {verb} {k} of them. {q} has {m} {item}. "
                f"How many more {item} does {p} have than {q}?")
    return Problem(question, "lose_more", ["gives_away", "how_many_more"], solve)


def _price_change(rng: random.Random, p: str, q: str, item: str) -> Problem:
    price, count = rng.randint(2, 6), rng.randint(2, 5)
    paid = 10 * ((price * count) // 10 + 1 + rng.randint(0, 2))

    def solve(held: set[str]) -> list[Step]:
        s1 = Step(price, "*", count, f"The {item} cost $", ".")
        return [s1, Step(paid, "-", s1.result, f"{p} gets $", " back.")]

    question = (f"{item.capitalize()} cost ${price} each. {p} buys {count} {item} and pays with ${paid}. "
                f"How much change does {p} get?")
    return Problem(question, "price_change", [], solve)


def _three_step(rng: random.Random, p: str, q: str, item: str) -> Problem:
    n = 2 * rng.randint(3, 10)
    k, verb = rng.randint(1, n // 2 - 1), rng.choice(VERBS_LOSE)

    def solve(held: set[str]) -> list[Step]:
        s1 = step(n, "/", 2, f"{q} has ", f" {item}.", "half_as_many", held)
        s2 = step(s1.result, "-", k, f"After that, {q} has ", f" {item}.", "gives_away", held)
        return [s1, s2, Step(n, "+", s2.result, "Together they have ", f" {item}.")]

    question = (f"{p} has {n} {item}. {q} has half as many {item} as {p}. Then {q} {verb} {k} {item}. "
                f"How many {item} do they have altogether?")
    return Problem(question, "three_step", ["half_as_many", "gives_away", "forgot_last_step"], solve)


TEMPLATES = [_half_total, _buy_then_lose, _times_total, _times_more, _lose_more, _price_change, _three_step]


@dataclass
class World:
    demos: list[Problem]  # clean expert demonstrations (M1)
    corpus: list[tuple[Problem, str]]  # pretraining corpus: (problem, possibly misconceived solution)
    test: list[Problem]  # held-out problems: the reported evaluation
    valid: list[Problem]  # validation problems: the best checkpoint is chosen on these, never on `test`


def make_problem(rng: random.Random) -> Problem:
    p, q = rng.sample(NAMES, 2)
    return rng.choice(TEMPLATES)(rng, p, q, rng.choice(ITEMS))


def corpus_solution(problem: Problem, rng: random.Random, rate: float) -> str:
    """The pretraining corpus's solution: each cued misconception held with probability `rate`."""
    return problem.solution({cue for cue in problem.cues if rng.random() < rate})


def make_world(seed: int = 0, n_demos: int = 400, n_corpus: int = 20000, n_test: int = 500,
               misconception_rate: float = 0.6, leave_out: str | None = None, n_valid: int = 100) -> World:
    """Build the four disjoint parts. `leave_out` names a misconception whose cued problems
    are kept out of the demonstrations (they stay in the corpus and the test set). The validation
    problems are drawn last, so the other three do not depend on `n_valid`."""
    if leave_out is not None and leave_out not in MISCONCEPTIONS:
        raise UserError(f"unknown misconception {leave_out!r}; choose from {', '.join(MISCONCEPTIONS)}")
    rng = random.Random(seed)
    seen: set[str] = set()

    def fresh(n: int, keep=lambda p: True) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            prob = make_problem(rng)
            if prob.question not in seen and keep(prob):
                seen.add(prob.question)
                out.append(prob)
        return out

    test = fresh(n_test)
    demos = fresh(n_demos, lambda p: leave_out not in p.cues)
    corpus = [(p, corpus_solution(p, rng, misconception_rate)) for p in fresh(n_corpus)]
    return World(demos, corpus, test, fresh(n_valid))

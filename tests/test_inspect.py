"""Tests for minirl.localise (M7) by hand, and `minirl inspect` end to end on a micro run folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minirl.cli import app
from minirl.config import TrainConfig
from minirl.localise import (
    calibrate,
    chance_hit_at_k,
    char_to_token_span,
    cross_fit,
    display_rewards,
    first_below,
    first_wrong_line_span,
    hit_at_k,
    lowest,
    summarise,
)

# ---------------------------------------------------------------- by hand

TOKENS = ["Mo", " has", " 1", "2", "*", "4", " =", " 48", ".\n", "####", " 48", "<eos>"]
# offsets:  0-2   2-6   6-8  8-9 9-10 10-11 11-13 13-16 16-18 18-22 22-25; the text is 25 characters


def test_char_to_token_span() -> None:
    assert "".join(TOKENS[:-1])[9:10] == "*"
    assert char_to_token_span(TOKENS, (9, 10)) == (4, 5)  # one character, one token
    assert char_to_token_span(TOKENS, (7, 9)) == (2, 4)  # "12" starts inside the multi-char token " 1"
    assert char_to_token_span(TOKENS, (5, 7)) == (1, 3)  # crosses the boundary " has" | " 1"
    assert char_to_token_span(TOKENS, (17, 19)) == (8, 10)  # "\n#" spans ".\n" and "####"
    assert char_to_token_span(TOKENS, (23, 25)) == (10, 11)  # the end of the text: the EOS is never included
    assert char_to_token_span(TOKENS, (9, 9)) == (4, 5)  # an empty span is the character at its start
    with pytest.raises(ValueError):
        char_to_token_span(TOKENS, (24, 26))  # "<eos>" is not part of the response text
    assert char_to_token_span(TOKENS, (24, 26), eos=False) == (10, 12)


def test_first_wrong_line_span() -> None:
    gold = "a 3+4 = 7.\nb 7*2 = 14.\n#### 14"
    assert first_wrong_line_span(gold, gold) is None
    assert first_wrong_line_span("a 3+4 = 7.\nb 7+2 = 9.\n#### 9", gold) == (11, 21)  # the second line
    assert first_wrong_line_span("a 3*4 = 12.\n#### 12", gold) == (0, 11)
    assert first_wrong_line_span("a 3+4 = 7.\n#### 7", gold) == (11, 17)  # stopped a step early
    assert first_wrong_line_span("a 3+4 = 7.\n\nb", gold) == (11, 12)  # an empty line: its newline
    assert first_wrong_line_span("a 3+4 = 7.\nb 7*2", gold) == (11, 16)
    assert first_wrong_line_span("a 3+4 = 7.\nb 7*2 = 14.", gold) is None  # a right prefix: nothing wrong to mark
    assert first_wrong_line_span(gold + "\nmore", gold) == (len(gold) + 1, len(gold) + 5)  # a line past the gold
    assert first_wrong_line_span("", gold) is None


def test_display_rewards() -> None:
    result = {"tokens": ["a", "<eos>"], "logprobs": [-1.0, -0.5], "rewards": [-1.5, 0.5]}
    assert display_rewards(result, "token") == [-0.5, 1.0]
    assert display_rewards(result, "hybrid") == [-0.5, 1.0]  # f already holds h(s): shown as the token head's
    assert display_rewards(result, "scalar") == [-1.5, 0.5]
    with pytest.raises(ValueError):
        display_rewards({**result, "rewards": None}, "token")


def test_rankings_and_hit_at_k() -> None:
    scores = [0.0, -1.0, 0.5, -2.0, -1.0]
    assert lowest(scores) == [3, 1, 4, 0, 2]  # tie at -1.0 between 1 and 4: the earlier one first
    assert first_below(scores, -0.5) == [1, 3, 4, 0, 2]  # below -0.5 in reading order, then the rest lowest first
    assert first_below(scores, -5.0) == lowest(scores)  # nothing flagged: the lowest rule
    assert hit_at_k(lowest(scores), (3, 4), 1) == 1.0
    assert hit_at_k(lowest(scores), (4, 5), 2) == 0.0
    assert hit_at_k(lowest(scores), (4, 5), 3) == 1.0
    assert hit_at_k(first_below(scores, -0.5), (1, 2), 1) == 1.0  # the first error, not the worst one
    assert hit_at_k(lowest([1.0, 1.0, 1.0]), (0, 1), 1) == 1.0  # all tied: the first


def row(scores: list[float], target: tuple[int, int], steps: list[tuple[int, int]] | None = None) -> dict:
    return {"kind": "k", "target": target, "steps": steps or [(0, len(scores))], "scores": {"policy_logprob": scores}}


def test_calibrate_picks_the_threshold_that_finds_first_errors() -> None:
    # every trace: a first error at -2 (the target), then a worse echo at -6; tokens that are right sit at -0.5
    rows = [row([-0.5, -2.0, -0.5, -6.0], (1, 2)), row([-2.0, -0.5, -6.0, -0.5], (0, 1))]
    tau = calibrate(rows, "policy_logprob")
    assert -6.0 < tau <= -0.5  # flags -2 but not -0.5: both targets hit
    assert all(hit_at_k(first_below(r["scores"]["policy_logprob"], tau), r["target"], 1) for r in rows)
    assert calibrate([], "policy_logprob") is None


def test_calibrate_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(20):
        rows = []
        for _ in range(rng.randint(1, 6)):
            scores = [float(rng.randint(-8, 0)) for _ in range(rng.randint(1, 7))]  # integers: many ties
            start = rng.randrange(len(scores))
            rows.append(row(scores, (start, rng.randint(start + 1, len(scores)))))

        def hits(tau: float, rows: list[dict] = rows) -> float:
            return sum(hit_at_k(first_below(r["scores"]["policy_logprob"], tau), r["target"], 1) for r in rows)

        every = {v for r in rows for v in r["scores"]["policy_logprob"]}
        assert hits(calibrate(rows, "policy_logprob")) == max(hits(t) for t in every | {t + 0.5 for t in every})


def test_cross_fit_and_summarise_by_hand() -> None:
    rows = [row([-0.5, -2.0, -0.5, -6.0], (1, 2), [(0, 2), (2, 4)]) for _ in range(4)]
    taus = cross_fit(rows, ("policy_logprob",))
    assert len(taus) == 2 and all(r["taus"] is taus[i % 2] for i, r in enumerate(rows))  # the other fold's tau
    figures = summarise(rows)
    assert figures["n"] == 4
    assert figures["hit@1"]["policy_logprob"] == 0.0  # the lowest token is the echo at 3
    assert figures["hit@1"]["policy_logprob_first"] == 1.0
    assert figures["hit@3"]["policy_logprob"] == 1.0  # 3, 1, 0
    assert figures["step@1"]["policy_logprob"] == 0.0  # line means: -1.25 vs -3.25: the second line
    assert figures["step@1"]["policy_logprob_first"] == 1.0  # the line holding the first flagged token
    assert figures["hit@1"]["chance"] == pytest.approx(0.25) and figures["step@1"]["chance"] == 0.5
    assert figures["by_kind"]["k"]["n"] == 4


def test_chance_hit_at_k() -> None:
    assert chance_hit_at_k(10, (4, 6), 1) == pytest.approx(0.2)
    assert chance_hit_at_k(10, (4, 6), 3) == pytest.approx(1 - 56 / 120)
    assert chance_hit_at_k(10, (0, 10), 1) == 1.0
    assert chance_hit_at_k(3, (0, 1), 5) == 1.0  # k larger than n: every token is chosen


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def test_questions(run_dir: Path) -> list[dict]:
    from minirl.data import load_tasks

    return load_tasks(TrainConfig(**json.loads((run_dir / "config.json").read_text())))["test"]


def invoke(*args: str):
    return CliRunner(env={"NO_COLOR": "1"}).invoke(app, ["inspect", *args])


def test_inspect_one_question(run_dir: Path, test_questions: list[dict]) -> None:
    result = invoke("--run", str(run_dir), "--question", "1")
    assert result.exit_code == 0, result.output
    assert " ".join(test_questions[1]["question"].split()[:3]) in result.stdout
    assert "reward f - log pi per token" in result.stdout and "token head" in result.stdout


def test_inspect_perturbed(run_dir: Path, test_questions: list[dict]) -> None:
    result = invoke("--run", str(run_dir), "--question", "1", "--perturb", "operator")
    assert result.exit_code == 0, result.output
    assert "expert trace" in result.stdout and "perturbed (operator)" in result.stdout
    assert "marked change" in result.stdout and "<-- lowest" in result.stdout


def test_inspect_given_trace_as_json(run_dir: Path, test_questions: list[dict]) -> None:
    gold = test_questions[2]["answer"]
    result = invoke("--run", str(run_dir), "--question", "2", "--trace", gold, "--json")
    assert result.exit_code == 0, result.output
    traces = json.loads(result.stdout)["traces"]
    assert "".join(traces[0]["tokens"][:-1]) == gold
    assert all(abs(x) < 1e-4 for x in traces[0]["scores"])  # a fresh token head: f = log pi, so f - log pi = 0


def test_inspect_localisation_json(run_dir: Path) -> None:
    result = invoke("--run", str(run_dir), "--localisation", "5", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    scores = {"reward", "reward_minus_logprob", "policy_logprob"}
    for setting in ("perturbed", "samples"):
        assert {"n", "hit@1", "hit@3", "step@1", "by_kind", "thresholds"} <= set(figures[setting])
        assert set(figures[setting]["thresholds"]) == scores
        for key in ("hit@1", "hit@3", "step@1"):
            assert set(figures[setting][key]) <= scores | {f"{s}_first" for s in scores} | {"chance"}
            assert scores | {"chance"} <= set(figures[setting][key])
            assert all(0.0 <= v <= 1.0 for v in figures[setting][key].values() if v is not None)
    assert figures["perturbed"]["n"] == 5
    # a fresh token head is a copy of the policy: the reward localises exactly as the log-prob does
    assert figures["perturbed"]["hit@1"]["reward"] == figures["perturbed"]["hit@1"]["policy_logprob"]


@pytest.mark.parametrize("args, code", [(["--run", "/nonexistent"], 1), (["--perturb", "bogus"], 2),
                                        (["--question", "100000"], 2)])  # 2: a usage error
def test_inspect_user_errors(run_dir: Path, args: list[str], code: int) -> None:
    result = invoke(*(["--run", str(run_dir)] if args[0] != "--run" else []), *args)
    assert result.exit_code == code
    lines = result.output.strip().splitlines()  # transformers' "Loading weights" bar may come first, on stderr
    assert lines[-1].startswith("error:") and sum("error" in line for line in lines) == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""

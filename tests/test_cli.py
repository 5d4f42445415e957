"""`minirl train`'s options: defaults and choices in --help, --print-config, one-line errors, the next commands."""

import json

import pytest
from typer.testing import CliRunner

from minirl.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})  # wide: no help line is wrapped


def test_help_shows_defaults_tiny_values_and_choices():
    result = invoke("train", "--help")
    assert result.exit_code == 0
    for text in ("(one of: pretrain, sft, airl, outcome, reward)", "[tiny|smollm2|gsm8k-qwen0.5b]",
                 "[token|scalar|hybrid]", "[airl|logit]", "[gae|group|loo|trace]", "[tiny|small|micro]",
                 "half_as_many, gives_away", "--print-config", "--reward-size",
                 "[default: airl]", "[default: 120]", "[default: 0.0002]", "[default: (empty)]",
                 "[tiny: pretrain 600, sft 200, airl/outcome 100]", "[tiny: airl/outcome 0.05]"):
        assert text in result.output, text


def test_print_config_gives_the_preset_values_then_the_options():
    result = invoke("train", "--algo", "pretrain", "--print-config")
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output)
    assert (cfg["algo"], cfg["preset"], cfg["steps"], cfg["lr"], cfg["eval_every"]) == ("pretrain", "tiny", 600,
                                                                                          3e-3, 200)
    cfg = json.loads(invoke("train", "--algo", "pretrain", "--steps", "7", "--lr", "0.5", "--print-config").output)
    assert (cfg["steps"], cfg["lr"], cfg["eval_every"]) == (7, 0.5, 200)  # given options win, the rest is the preset's
    cfg = json.loads(invoke("train", "--preset", "gsm8k-qwen0.5b", "--kl-beta", "0", "--print-config").output)
    assert (cfg["kl_beta"], cfg["top_p"], cfg["data"]) == (0.0, 0.95, "train")


@pytest.mark.parametrize("args, message", [
    (["--head", "bogus"], "--head 'bogus': choose from token, scalar, hybrid"),
    (["--advantage", "nope"], "--advantage 'nope': choose from gae, group, loo"),
    (["--leave-out", "nope"], "--leave-out 'nope': choose from"),
])
def test_a_bad_choice_is_one_error_line(args, message):
    result = invoke("train", *args, "--print-config")
    assert result.exit_code == 2 and "Traceback" not in result.output  # a usage error
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output


@pytest.mark.parametrize("args, message", [
    (["--test-data", "test"], "--test-data test names held-out GSM8K problems; the synthetic world draws its own"),
    (["--algo", "sft", "--reward-init", "runs/x"], "--reward-init starts a reward model; --algo sft trains none"),
    (["--algo", "pretrain", "--leave-out", "gives_away"], "--leave-out gives_away keeps a misconception out of the "
                                                          "demonstrations; --algo pretrain reads none"),
    (["--expert-nll", "2", "--head", "scalar"], "--expert-nll anchors the token head's f = log pi_phi"),
    (["--algo", "sft", "--expert-nll", "0.5"], "--expert-nll anchors the token head's f = log pi_phi"),
])
def test_an_option_the_run_would_ignore_is_refused(args, message):
    result = invoke("train", *args, "--print-config")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output


@pytest.mark.parametrize("args", [["--preset", "gsm8k-qwen0.5b", "--algo", "sft"],  # the preset's reward_init, unused
                                  ["--preset", "smollm2", "--algo", "sft"], ["--test-data", "test", "--data", "train"],
                                  ["--algo", "reward", "--reward-init", "runs/x"]])
def test_options_a_preset_sets_for_every_algorithm_are_not_refused(args):
    result = invoke("train", *args, "--print-config")
    assert result.exit_code == 0, result.output


def test_train_ends_with_the_next_commands(monkeypatch):
    import minirl.train

    seen = []
    monkeypatch.setattr(minirl.train, "train", lambda cfg: seen.append(cfg) or {})
    result = invoke("train", "--algo", "sft", "--steps", "3", "--out", "runs/my run")
    assert result.exit_code == 0, result.output
    assert (seen[0].algo, seen[0].steps, seen[0].lr) == ("sft", 3, 1e-3)
    for command in ("minirl rerank --run 'runs/my run'", "minirl inspect --run 'runs/my run'",
                    "minirl plot 'runs/my run'"):
        assert command in result.output

"""What a user can get wrong, and what can go wrong, end to end through the CLI (issue #14). Each bad option, file
or run folder is refused before any work in ONE `error:` line naming the option or file, never a traceback: exit
code 2 for a usage error, 1 for a bad file, bad data or a diverged run; a refused `train` creates no run folder.
A diverging run stops naming the step and the quantity, keeps its last checkpoint and saves nothing non-finite;
Ctrl-C says where --resume continues (exit 130); a pickled optimiser state is refused, never run.
Runs are micro (the `run_dir` fixture of conftest.py as the starting policy): the file takes seconds."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from minirl import folders, rerank, runs
from minirl.cli import app
from minirl.config import NumericalError
from minirl.data import is_correct

SMALL = ["--size", "micro", "--n-corpus", "300", "--n-demos", "40", "--eval-questions", "4", "--final-questions", "4",
         "--eval-samples", "2", "--max-new-tokens", "40"]
AIRL = ["train", *SMALL, "--init", "{run}", "--steps", "2", "--eval-every", "2", "--disc-warmup", "2",
        "--warmup-pool", "4", "--prompts-per-iter", "2", "--samples-per-prompt", "2", "--minibatch-size", "4",
        "--disc-batch", "2"]
SFT = ["train", *SMALL, "--algo", "sft", "--init", "{run}", "--steps", "3", "--eval-every", "1",
       "--prompts-per-iter", "4"]
OUT = ["--out", "{tmp}/out"]  # a refused train must not create it


def gsm8k_line(question: str, answer: str) -> str:
    return json.dumps({"question": question, "answer": answer}) + "\n"


def write_bad_files(tmp: Path) -> None:
    """Plain bad files, named by the table below."""
    (tmp / "latin.jsonl").write_bytes(gsm8k_line("Tom has 3 pens", "#### 3").encode("latin-1") + b"caf\xe9\n")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "keyless.jsonl").write_text(json.dumps({"question": "q", "records": []}) + "\n")
    (tmp / "six.jsonl").write_text("".join(gsm8k_line(f"Tom has {i} pens and buys 4. How many?", f"#### {i + 4}")
                                           for i in range(6)))
    (tmp / "four.jsonl").write_text("".join(gsm8k_line(f"Ann has {i} cups and buys 2. How many?", f"#### {i + 2}")
                                            for i in range(4)))
    (tmp / "seven-comma-two.jsonl").write_text(gsm8k_line("How many?", "3+4=72\n#### 7,2"))


def break_run(run_dir: Path, target: Path, how: str) -> None:
    """A copy of the micro run with one thing broken."""
    shutil.copytree(run_dir, target)
    if how == "empty-config":
        (target / "config.json").write_text("")
    elif how == "corrupt-config":
        (target / "config.json").write_text('{"algo": ')
    elif how in ("truncated-policy", "truncated-reward"):
        path = target / ("policy" if how == "truncated-policy" else "reward/backbone") / "model.safetensors"
        os.truncate(path, path.stat().st_size // 2)
    elif how == "nan-policy":
        path = target / "policy/model.safetensors"
        save_file({k: torch.full_like(v, math.nan) for k, v in load_file(path).items()}, path)


def invoke(args: list[str], run_dir: Path, tmp: Path):
    return CliRunner().invoke(app, [a.format(run=run_dir, tmp=tmp, bad=tmp / "run") for a in args])


def one_error_line(result, code: int, message: str) -> str:
    """The CLI exited with `code`, by its own hand (no exception escaped), with exactly one `error:` line
    holding `message`, and no traceback; returns that line."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # CliRunner catches escaped exceptions
    assert "Traceback" not in result.output
    lines = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    return lines[0]


# ---------------------------------------------------------------- the table: args, broken run, exit code, message

TABLE = [
    # train: options out of range, unknown values, options that do not go together (usage: exit 2)
    (["train", "--eval-every", "0", *OUT], None, 2, "--eval-every 0: must be at least 1"),
    (["train", "--prompts-per-iter", "0", *OUT], None, 2, "--prompts-per-iter 0: must be at least 1"),
    (["train", "--samples-per-prompt", "0", *OUT], None, 2, "--samples-per-prompt 0: must be at least 1"),
    (["train", "--minibatch-size", "0", *OUT], None, 2, "--minibatch-size 0: must be at least 1"),
    (["train", "--eval-questions", "0", *OUT], None, 2, "--eval-questions 0: must be at least 1"),
    (["train", "--n-demos", "0", *OUT], None, 2, "--n-demos 0: must be at least 1"),
    (["train", "--max-new-tokens", "-5", *OUT], None, 2, "--max-new-tokens -5: must be at least 1"),
    (["train", "--steps", "-3", *OUT], None, 2, "--steps -3: must not be negative"),
    (["train", "--lr", "-1", *OUT], None, 2, "--lr -1.0: must be in (0, inf)"),
    (["train", "--lr", "nan", *OUT], None, 2, "--lr nan: must be in (0, inf)"),
    (["train", "--temperature", "0", *OUT], None, 2, "--temperature 0.0: must be in (0, inf)"),
    (["train", "--top-p", "1.5", *OUT], None, 2, "--top-p 1.5: must be in (0, 1]"),
    (["train", "--seed", "-1", *OUT], None, 2, "--seed -1: must be in [0, 4294967295]"),
    (["train", "--entropy-coef", "-0.5", *OUT], None, 2, "--entropy-coef -0.5: must be in [0, inf)"),
    (["train", "--change-share", "1", *OUT], None, 2, "--change-share 1.0: must be in (0, 1)"),
    (["train", "--change-share", "0", *OUT], None, 2, "--change-share 0.0: must be in (0, 1)"),
    (["train", "--advantage", "bogus", *OUT], None, 2, "--advantage 'bogus': choose from gae, group, loo"),
    (["train", "--algo", "outcome", "--advantage", "trace", *OUT], None, 2,
     "--advantage trace shapes a dense reward (airl); outcome RL pays one number per trace: use group or gae"),
    (["train", "--form", "bogus", *OUT], None, 2, "--form 'bogus': choose from airl, logit"),
    (["train", "--perturbed-labels", "all", *OUT], None, 2, "--perturbed-labels 'all': choose from after, line"),
    (["train", "--algo", "bogus", *OUT], None, 2, "--algo 'bogus': choose from pretrain, sft, airl, outcome"),
    (["train", "--preset", "nope", *OUT], None, 2, "unknown preset 'nope'"),
    (["train", "--form", "logit", *OUT], None, 2, "--head token needs --form airl"),
    (["train", "--disc-batch", "50", "--n-demos", "40", *OUT], None, 2, "--disc-batch 50 is larger than --n-demos 40"),
    (["train", "--resume", "--overwrite", *OUT], None, 2, "give --resume or --overwrite, not both"),
    (["train", "--train-layers", "3", *OUT], None, 2, "--train-layers 3 is for --algo reward"),
    (["train", "--disc-steps", "-1", *OUT], None, 2, "--disc-steps -1: must not be negative"),
    (["train", "--kl-beta", "nan", *OUT], None, 2, "--kl-beta nan: must be in [0, inf)"),  # NaN < 0 is False
    (["train", "--kl-beta", "inf", *OUT], None, 2, "--kl-beta inf: must be in [0, inf)"),
    (["train", "--reward-clip", "nan", *OUT], None, 2, "--reward-clip nan: must be in [0, inf]"),
    (["train", "--target-kl", "nan", *OUT], None, 2, "--target-kl nan: must be in [0, inf]"),
    (["train", "--algo", "outcome", "--reward-from", "{run}", *OUT], None, 2,
     "--reward-from starts an airl run's reward model from another run: use it with --algo airl"),
    (["train", "--reward-from", "{run}", "--reward-init", "{run}/policy", *OUT], None, 2, "and without --reward-init"),
    (["train", "--reward-size", "big", *OUT], None, 2, "--reward-size 'big': choose from '', tiny, small, micro"),
    (["train", "--reward-size", "small", "--reward-init", "{run}/policy", *OUT], None, 2,
     "--reward-size pretrains the reward model's backbone on the tiny preset's world: use it with --preset tiny"),
    (["train", "--algo", "sft", "--reward-size", "small", *OUT], None, 2, "--algo airl or reward"),
    (["train", "--preset", "smollm2", "--reward-size", "small", *OUT], None, 2, "use it with --preset tiny"),
    ([*AIRL, "--reward-from", "{run}", "--head", "scalar", *OUT], None, 2,
     "was trained with --head token --form airl: give the same here"),
    ([*AIRL, "--reward-from", "{tmp}", *OUT], None, 1, "no reward model in that run (no reward/ inside)"),
    (["train", "--reward-from", "{tmp}/nowhere", *OUT], None, 1, "no reward model in that run"),  # no base built
    ([*AIRL, "--reward-from", "{bad}", *OUT], "truncated-reward", 1, "truncated or corrupt safetensors"),
    ([*AIRL, "--reward-init", "{tmp}/six.jsonl", *OUT], None, 1, "cannot load model"),
    (["train", "--eval-questions", "1000000", *OUT], None, 2,
     "the synthetic world: --n-demos 400, --n-corpus 20000 and --eval-questions 1000000 ask for 1,020,400 distinct"),
    (["train", "--final-questions", "600", "--n-corpus", "300", *OUT], None, 2,
     "the synthetic world: 500 held-out problems, fewer than the evaluation asks for (--final-questions 600)"),
    # train: bad data, run folders and places to write (exit 1)
    (["train", "--algo", "sft", "--init", "{run}", "--data", "{tmp}/latin.jsonl", *OUT], None, 1,
     "latin.jsonl: not UTF-8 text"),
    (["train", "--algo", "sft", "--init", "{run}", "--data", "{tmp}/seven-comma-two.jsonl", *OUT], None, 1,
     "seven-comma-two.jsonl:1: the answer has no final number"),
    (["train", "--algo", "sft", "--init", "{run}", "--data", "{tmp}/six.jsonl", *OUT], None, 1,
     "six.jsonl: 6 problems, and 600 of them are held out for evaluation (--eval-questions 100"),
    (["train", "--algo", "sft", "--init", "{run}", "--data", "{tmp}/six.jsonl", "--test-data", "{tmp}/four.jsonl",
      "--n-demos", "2", "--final-questions", "10", "--eval-questions", "2", *OUT], None, 1,
     "four.jsonl: 4 held-out problems, fewer than the evaluation asks for"),
    (["train", "--init", "{run}", "--data", "{tmp}/six.jsonl", "--test-data", "{tmp}/four.jsonl", "--n-demos", "1",
      "--final-questions", "4", "--eval-questions", "4", *OUT], None, 1,
     "six.jsonl: 1 problems for RL prompts, fewer than --prompts-per"),
    (["train", "--init", "{run}", "--data", "{tmp}/six.jsonl", "--test-data", "{tmp}/six.jsonl", *OUT], None, 1,
     "six.jsonl is the --data file itself"),
    (["train", "--algo", "sft", *SMALL, "--init", "{bad}", *OUT], "truncated-policy", 1,
     "policy/model.safetensors: truncated or corrupt safetensors"),
    (["train", "--algo", "sft", *SMALL, "--init", "{run}", "--out", "{bad}"], "empty-config", 1,
     "config.json: unreadable, empty or not a JSON object"),
    (["train", "--algo", "sft", *SMALL, "--init", "{run}", "--resume", *OUT], None, 1, "--resume: no checkpoint in"),
    (["train", "--init", "{tmp}/nowhere", *OUT], None, 1, "--init {tmp}/nowhere: no such model folder or file"),
    ([*AIRL, "--reward-init", "{tmp}/nowhere.gguf", *OUT], None, 1,
     "--reward-init {tmp}/nowhere.gguf: no such model folder or file"),
    (["train", "--init", "{run}", "--gguf-file", "x.gguf", *OUT], None, 1, "--gguf-file x.gguf: no such file in"),
    (["train", "--out", "{tmp}/six.jsonl"], None, 1, "six.jsonl: not a folder"),
    (["train", "--out", "{tmp}/six.jsonl/out"], None, 1, "six.jsonl is not a folder"),
    # rerank (usage: exit 2; files: exit 1), all before sampling
    (["rerank", "--run", "{run}", "--n", "0"], None, 2, "--n 0: must be at least 1"),
    (["rerank", "--run", "{run}", "--n", "99999999999"], None, 2, "--n 99999999999: at most 1024 samples"),
    (["rerank", "--run", "{tmp}/nowhere", "--from-samples", "{tmp}/six.jsonl"], None, 1,
     "--run {tmp}/nowhere: no such run folder"),
    (["rerank", "--run", "{run}", "--questions", "0"], None, 2, "--questions 0: must be at least 1"),
    (["rerank", "--run", "{run}", "--questions", "-1"], None, 2, "--questions -1: must be at least 1"),
    (["rerank", "--run", "{run}", "--max-new-tokens", "-5"], None, 2, "--max-new-tokens -5: must not be negative"),
    (["rerank", "--run", "{run}", "--seed", str(2**32)], None, 2, "--seed 4294967296: must be below 2^32"),
    (["rerank", "--run", "{run}", "--samples", "/no/such/dir/x.jsonl"], None, 1, "no such folder /no/such/dir"),
    (["rerank", "--run", "{run}", "--out", "{tmp}"], None, 1, "is a folder, not a file"),
    (["rerank", "--run", "{run}", "--from-samples", "{tmp}/empty.jsonl"], None, 1, "empty.jsonl: no records"),
    (["rerank", "--run", "{run}", "--from-samples", "{tmp}/keyless.jsonl"], None, 1,
     "keyless.jsonl:1: not a sample record"),
    (["rerank", "--run", "{run}", "--from-samples", "{tmp}/latin.jsonl"], None, 1, "latin.jsonl: not UTF-8 text"),
    (["rerank", "--run", "{run}", "--from-samples", "{tmp}/none.jsonl"], None, 1, "none.jsonl: no such file"),
    (["rerank", "--run", "{run}", "--data", "{tmp}/six.jsonl"], None, 1, "6 problems, fewer than --questions 200"),
    (["rerank", "--run", "{run}", "--data", "{tmp}/latin.jsonl"], None, 1, "latin.jsonl: not UTF-8 text"),
    (["rerank", "--run", "{bad}"], "truncated-policy", 1, "policy/model.safetensors: truncated or corrupt"),
    (["rerank", "--run", "{bad}"], "truncated-reward", 1, "reward/backbone/model.safetensors: truncated or corrupt"),
    (["rerank", "--run", "{bad}"], "empty-config", 1, "config.json: unreadable, empty or not a JSON object"),
    (["rerank", "--run", "{bad}", "--n", "1", "--questions", "1"], "nan-policy", 1,
     "the policy's next-token logits are NaN or infinite"),
    # inspect
    (["inspect", "--run", "{run}", "--trace-file", "{tmp}/latin.jsonl"], None, 1, "latin.jsonl: not UTF-8 text"),
    (["inspect", "--run", "{run}", "--max-new-tokens", "-5"], None, 2, "--max-new-tokens -5: must be at least 1"),
    (["inspect", "--run", "{run}", "--localisation", "0"], None, 2, "--localisation 0: must be at least 1"),
    (["inspect", "--run", "{run}", "--trace", "x", "--trace-file", "{tmp}/six.jsonl"], None, 2,
     "give --trace or --trace-file, not both"),
    (["inspect", "--run", "{bad}"], "corrupt-config", 1, "config.json: unreadable, empty or not a JSON object"),
    (["inspect", "--run", "{run}", "--localisation", "3", "--text", "q"], None, 2,
     "--localisation measures over held-out problems; --text shows one trace"),
    (["inspect", "--run", "{run}", "--html", "{tmp}/nowhere/x.html"], None, 1, "--html {tmp}/nowhere/x.html: no such"),
]


@pytest.mark.parametrize("args, broken, code, message", TABLE, ids=[f"{row[0][0]} {row[3]}" for row in TABLE])
def test_bad_input_is_one_line(args, broken, code, message, run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run folder, were one made, lands here
    write_bad_files(tmp_path)
    if broken:
        break_run(run_dir, tmp_path / "run", broken)
    one_error_line(invoke(args, run_dir, tmp_path), code, message.format(tmp=tmp_path))
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()  # a refused train leaves nothing


# ---------------------------------------------------------------- security


class RunsCode:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_optimiser_state_is_refused_and_never_run(run_dir, tmp_path):
    done = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run"], run_dir, tmp_path)
    assert done.exit_code == 0, done.output
    marker = tmp_path / "pwned"
    crafted = tmp_path / "run/checkpoint-000001/optim.pt"
    torch.save({"policy": RunsCode(marker)}, crafted)
    (tmp_path / "run/summary.json").unlink()  # an unfinished run: only that one is resumed
    result = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path)
    one_error_line(result, 1, "optim.pt holds more than tensors; refused to load it")
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # the file is a real threat: loaded as a pickle, it runs its command
    assert marker.exists()


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_says_where_resume_continues(run_dir, tmp_path, monkeypatch):
    checkpoint = runs.save_checkpoint

    def checkpoint_then_ctrl_c(*args, **kwargs):
        checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # as SIGINT does, right after the checkpoint of step 1

    monkeypatch.setattr(runs, "save_checkpoint", checkpoint_then_ctrl_c)
    result = invoke([*SFT, *OUT], run_dir, tmp_path)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == "interrupted at step 1; --resume continues"
    monkeypatch.setattr(runs, "save_checkpoint", checkpoint)
    assert invoke([*SFT, *OUT, "--resume"], run_dir, tmp_path).exit_code == 0
    logged = [json.loads(x) for x in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "step" in m] == [1, 2, 3]  # each step once: no duplicated rows
    assert [m["eval_step"] for m in logged if "eval_step" in m] == [1, 2, 3]


def test_ctrl_c_in_rerank_is_one_word(run_dir, tmp_path, monkeypatch):

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rerank, "sample_records", ctrl_c)
    result = invoke(["rerank", "--run", "{run}"], run_dir, tmp_path)
    assert result.exit_code == 130 and result.output.strip() == "interrupted"


# ---------------------------------------------------------------- numerical faults


def all_finite(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for path in folder.rglob("*.safetensors") for t in load_file(path).values())


def strict_json(text: str):
    """json.loads that refuses the bare NaN / Infinity Python's json would accept."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))


def test_reward_only_run_with_a_huge_disc_lr_stops_and_saves_no_nan_reward(run_dir, tmp_path):
    result = invoke([*AIRL, *OUT, "--steps", "0", "--disc-lr", "1e4", "--disc-warmup", "3"], run_dir, tmp_path)
    one_error_line(result, 1, "discriminator warm-up step 2: disc_grad_norm is nan; training stopped")
    out = tmp_path / "out"
    assert not (out / "reward").exists() and not (out / "summary.json").exists()
    assert all_finite(out)  # policy/: the starting policy, saved by the evaluation at step 0
    rows = [strict_json(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["disc_grad_norm"] is None  # logged as null, never as a bare NaN


def test_a_huge_lr_stops_at_the_update_not_in_sampling(run_dir, tmp_path):
    result = invoke([*AIRL, *OUT, "--lr", "1e3", "--disc-warmup", "1"], run_dir, tmp_path)
    one_error_line(result, 1, "airl step 1: grad_norm is nan; training stopped, no checkpoint was written")
    assert "multinomial" not in result.output and all_finite(tmp_path / "out")


def test_a_nan_after_a_checkpoint_keeps_that_checkpoint(run_dir, tmp_path, monkeypatch):
    from minirl import sft

    sft_loss, calls = sft.sft_loss, []

    def nan_at_step_2(policy, batch):
        calls.append(1)
        loss = sft_loss(policy, batch)
        return loss * math.nan if len(calls) == 2 else loss

    monkeypatch.setattr(sft, "sft_loss", nan_at_step_2)
    result = invoke([*SFT, *OUT], run_dir, tmp_path)
    one_error_line(result, 1, "sft step 2: loss is nan; training stopped, the checkpoint of step 1 is kept")
    out = tmp_path / "out"
    assert folders.last_checkpoint(out) == 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-000001"]
    assert all_finite(out) and not (out / "summary.json").exists()


def test_non_finite_weights_are_never_saved(run_dir, tmp_path):
    from minirl.models import load_lm

    policy, tokenizer = load_lm(str(run_dir))
    with torch.no_grad():
        next(policy.parameters())[0, 0] = math.inf
    run = runs.Run(tmp_path, 0.0, {})
    with pytest.raises(NumericalError, match="the policy has non-finite weights"):
        runs.save_checkpoint(run, 1, 0.0, 0, policy, tokenizer, {})
    assert list(tmp_path.iterdir()) == []


def test_summary_json_has_no_bare_nan(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    runs.write_summary(runs.Run(tmp_path, 0.0, {}), {"reward_auroc": math.nan, "pass@2": math.inf, "greedy_acc": 0.5})
    summary = strict_json((tmp_path / "summary.json").read_text())
    assert summary["reward_auroc"] is None and summary["pass@2"] is None and summary["greedy_acc"] == 0.5


# ---------------------------------------------------------------- grading: odd final answers are never misread


@pytest.mark.parametrize("reply, gold, right", [
    ("#### 7,2", "#### 72", False),  # not thousands in groups of three
    ("#### .5", "#### 0.5", True),
    ("#### 1/2", "#### 0.5", False),
    ("#### 1e3", "#### 1000", False),
    ("#### 1 000", "#### 1000", False),
    ("#### \u22125", "#### -5", True),  # the Unicode minus sign
    ("#### 10-3", "#### 7", False),
    ("the sum is 7\n####", "#### 7", False),  # an empty #### never falls back to an earlier number
])
def test_odd_final_answers(reply, gold, right):
    assert is_correct(reply, gold) is right

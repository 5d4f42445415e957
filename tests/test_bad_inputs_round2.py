"""A second bad-input audit (2026-11-29): outputs that would overwrite an input, a rerun that would delete an
unfinished run's checkpoints, two processes in one run folder, the base policy's build interrupted, inputs longer
than the model's context, integer options past any sane size, empty or ignored inspect options, and terminal
escapes in the text shown. Each is one `error:` line (or now works), never a traceback, and nothing of a user's is
destroyed. Helpers and argument lists are test_bad_inputs.py's; runs are micro (seconds)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_bad_inputs import AIRL, OUT, SFT, invoke, one_error_line

from minirl import folders, train
from minirl.config import TrainConfig

# ---------------------------------------------------------------- an output is never one of the inputs


def test_rerank_never_writes_over_its_own_inputs(run_dir, tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text("precious samples\n")
    data = tmp_path / "data.jsonl"
    data.write_text("precious data\n")
    for args, message in (
        (["--from-samples", "{tmp}/s.jsonl", "--out", "{tmp}/s.jsonl"], "--out {tmp}/s.jsonl is also --from-samples"),
        (["--data", "{tmp}/data.jsonl", "--samples", "{tmp}/data.jsonl"], "--samples {tmp}/data.jsonl is also --data"),
        (["--samples", "{tmp}/x.jsonl", "--out", "{tmp}/x.jsonl"], "--out and --samples are both"),
        (["--out", "{run}/config.json"], "--out {run}/config.json is a file of the run"),
        (["--samples", "{run}/policy/extra.jsonl"], "is a file of the run"),
    ):
        result = invoke(["rerank", "--run", "{run}", "--n", "1", "--questions", "1", *args], run_dir, tmp_path)
        one_error_line(result, 1 if "both" not in message else 2, message.format(tmp=tmp_path, run=run_dir))
    os.link(samples, tmp_path / "hard.jsonl")  # another name for the same file
    result = invoke(["rerank", "--run", "{run}", "--from-samples", "{tmp}/s.jsonl", "--out", "{tmp}/hard.jsonl"],
                    run_dir, tmp_path)
    one_error_line(result, 1, "hard.jsonl is also --from-samples")
    assert samples.read_text() == "precious samples\n" and data.read_text() == "precious data\n"
    assert "n_demos" in json.loads((run_dir / "config.json").read_text())


def test_no_output_overwrites_the_data_files_a_run_reads(run_dir, tmp_path):
    import shutil

    shutil.copytree(run_dir, tmp_path / "run")
    test = tmp_path / "test.jsonl"
    test.write_text('{"question": "Tom has 3 pens. How many?", "answer": "#### 3"}\n')
    config = json.loads((run_dir / "config.json").read_text())
    (tmp_path / "run/config.json").write_text(json.dumps({**config, "data": "train", "test_data": str(test)}))
    for args in (["rerank", "--run", "{tmp}/run", "--samples", "{tmp}/test.jsonl"],
                 ["rerank", "--run", "{tmp}/run", "--out", "{tmp}/test.jsonl"],
                 ["inspect", "--run", "{tmp}/run", "--text", "How many?", "--html", "{tmp}/test.jsonl"]):
        one_error_line(invoke(args, run_dir, tmp_path), 1, f"{test} is also --run's --test-data")
    assert "Tom has 3 pens" in test.read_text()


def test_rerank_may_write_a_new_file_into_the_run_folder(run_dir, tmp_path):
    out = tmp_path / "run"
    import shutil

    shutil.copytree(run_dir, out)
    result = invoke(["rerank", "--run", "{tmp}/run", "--n", "1", "--questions", "1", "--out", "{tmp}/run/rerank.json"],
                    run_dir, tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "rerank.json").read_text())


def test_inspect_never_writes_its_html_over_the_trace_it_reads(run_dir, tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_text("Tom has 3 pens.\n#### 3")
    result = invoke(["inspect", "--run", "{run}", "--trace-file", "{tmp}/trace.txt", "--html", "{tmp}/trace.txt"],
                    run_dir, tmp_path)
    one_error_line(result, 1, f"--html {trace} is also --trace-file")
    assert trace.read_text() == "Tom has 3 pens.\n#### 3"


# ---------------------------------------------------------------- a run folder's work is never lost silently


def interrupted_sft(run_dir: Path, tmp: Path) -> Path:
    """A micro SFT run in tmp/run with a checkpoint and no summary: as if killed after its first checkpoint."""
    result = invoke([*SFT, "--steps", "2", "--out", "{tmp}/run"], run_dir, tmp)
    assert result.exit_code == 0, result.output
    (tmp / "run/summary.json").unlink()
    return tmp / "run"


def test_rerunning_without_resume_keeps_an_unfinished_runs_checkpoint(run_dir, tmp_path):
    run = interrupted_sft(run_dir, tmp_path)
    step = folders.last_checkpoint(run)
    result = invoke([*SFT, "--steps", "2", "--out", "{tmp}/run"], run_dir, tmp_path)
    one_error_line(result, 1, f"holds an unfinished run with these settings (checkpoint of step {step}); --resume")
    assert folders.last_checkpoint(run) == step
    assert invoke([*SFT, "--steps", "2", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path).exit_code == 0


def test_a_run_folder_another_live_process_trains_in_is_refused(run_dir, tmp_path):
    run = interrupted_sft(run_dir, tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / folders.LOCK).write_text(str(other.pid))
        result = invoke([*SFT, "--steps", "2", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path)
        one_error_line(result, 1, f"is being trained by another process (pid {other.pid})")
        assert folders.last_checkpoint(run) is not None
    finally:
        other.kill()
        other.wait()
    # the process is gone: its lock is stale, and the run continues; the lock is released at the end
    assert invoke([*SFT, "--steps", "2", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path).exit_code == 0
    assert not (run / folders.LOCK).exists()


def test_a_starting_model_inside_the_out_folder_is_refused(run_dir, tmp_path):
    import shutil

    shutil.copytree(run_dir, tmp_path / "base")
    result = invoke([*SFT, "--init", "{tmp}/base", "--out", "{tmp}/base", "--overwrite"], run_dir, tmp_path)
    one_error_line(result, 1, f"--init {tmp_path}/base lies in --out {tmp_path}/base")
    assert (tmp_path / "base/policy/model.safetensors").is_file()


def test_resume_may_lower_the_micro_batch_size(run_dir, tmp_path):
    interrupted_sft(run_dir, tmp_path)
    result = invoke([*SFT, "--steps", "2", "--out", "{tmp}/run", "--resume", "--micro-batch-size", "1"], run_dir,
                    tmp_path)
    assert result.exit_code == 0, result.output


def test_an_interrupted_base_policy_build_is_continued_not_redone(tmp_path, monkeypatch):
    base = replace(TrainConfig(), algo="pretrain", out=str(tmp_path / "base"))
    calls = []
    monkeypatch.setattr(folders, "last_checkpoint", lambda folder: 7)
    monkeypatch.setattr(folders, "differences", lambda folder, cfg: "")
    monkeypatch.setattr(train, "train", lambda cfg: calls.append(cfg))
    train.ensure_pretrained(base)
    assert len(calls) == 1 and calls[0].resume  # continued from its checkpoint
    monkeypatch.setattr(folders, "last_checkpoint", lambda folder: None)
    train.ensure_pretrained(base)
    assert not calls[1].resume  # nothing to continue: built afresh


def test_ctrl_c_while_the_base_policy_is_built_names_its_checkpoint(tmp_path, monkeypatch):
    from minirl.cli import where_to_continue

    monkeypatch.chdir(tmp_path)
    cfg = replace(TrainConfig(), out="runs/mine")  # the tiny preset without --init: it builds runs/base-tiny-s0
    assert where_to_continue(cfg) == "interrupted before the first checkpoint; nothing to resume"
    (tmp_path / "runs/base-tiny-s0").mkdir(parents=True)
    (tmp_path / "runs/base-tiny-s0/checkpoint.json").write_text(json.dumps({"folder": "checkpoint-000400",
                                                                              "step": 400}))
    assert where_to_continue(cfg) == ("interrupted while pretraining runs/base-tiny-s0 (step 400); the same command "
                                      "continues it")
    (tmp_path / "runs/mine").mkdir()
    (tmp_path / "runs/mine/checkpoint.json").write_text(json.dumps({"folder": "checkpoint-000002", "step": 2}))
    assert where_to_continue(cfg) == "interrupted at step 2; --resume continues"


# ---------------------------------------------------------------- sizes: the context, and a typo's extra zeros


@pytest.mark.parametrize("option, value, most", [("--samples-per-prompt", 10**9, 1024), ("--eval-samples", 10**9, 1024),
                                                 ("--ppo-epochs", 10**9, 100), ("--disc-steps", 10**9, 1000),
                                                 ("--perturbed-per-expert", 10**9, 100)])
def test_integer_options_past_any_sane_size_are_refused_at_once(run_dir, tmp_path, option, value, most):
    result = invoke([*AIRL, *OUT, option, str(value)], run_dir, tmp_path)
    one_error_line(result, 2, f"{option} {value}: at most {most}")
    assert not (tmp_path / "out").exists()


def test_max_new_tokens_past_the_models_context_is_refused(run_dir, tmp_path):
    context = json.loads((run_dir / "policy/config.json").read_text())["max_position_embeddings"]
    result = invoke([*SFT, *OUT, "--max-new-tokens", str(context)], run_dir, tmp_path)
    one_error_line(result, 1, f"--max-new-tokens {context}: the model's context holds {context} tokens")
    assert not (tmp_path / "out").exists()


def test_a_gguf_file_without_init_is_refused(run_dir, tmp_path):
    one_error_line(invoke(["train", "--gguf-file", "model.gguf", *OUT], run_dir, tmp_path), 2,
                   "--gguf-file names a file inside --init's folder: give --init too")


def test_a_trace_longer_than_the_models_context_is_refused_at_once(run_dir, tmp_path):
    (tmp_path / "long.txt").write_text("Step: 3 + 4 = 7\n" * 2000)
    result = invoke(["inspect", "--run", "{run}", "--trace-file", "{tmp}/long.txt"], run_dir, tmp_path)
    one_error_line(result, 1, "the question and trace of")
    assert "outgrows the model's context of" in result.output


def test_a_data_file_with_a_question_longer_than_the_context_is_refused(run_dir, tmp_path):
    rows = [{"question": f"Tom has {i} pens and buys 4. How many pens?", "answer": f"{i} + 4 = {i + 4}\n#### {i + 4}"}
            for i in range(30)]
    rows[7]["question"] = "Tom has pens. " * 3000 + "How many?"
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke([*SFT, "--data", "{tmp}/long.jsonl", "--n-demos", "10", "--eval-questions", "2",
                     "--final-questions", "2", *OUT], run_dir, tmp_path)
    one_error_line(result, 1, "long.jsonl: a question of")
    assert "outgrows the model's context of" in result.output and not (tmp_path / "out").exists()
    result = invoke(["rerank", "--run", "{run}", "--data", "{tmp}/long.jsonl", "--questions", "10", "--n", "1"],
                    run_dir, tmp_path)
    one_error_line(result, 1, "long.jsonl: a question of")


def test_a_demonstration_longer_than_the_context_is_refused(run_dir, tmp_path):
    rows = [{"question": f"Tom has {i} pens and buys 4. How many pens?", "answer": f"{i} + 4 = {i + 4}\n#### {i + 4}"}
            for i in range(30)]
    for row in rows:  # short questions, answers far past the micro model's 512 positions: the demonstrations
        row["answer"] = "Tom counts his pens. " * 300 + row["answer"]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke([*SFT, "--data", "{tmp}/long.jsonl", "--n-demos", "10", "--eval-questions", "2",
                     "--final-questions", "2", *OUT], run_dir, tmp_path)
    one_error_line(result, 1, "long.jsonl: a demonstration of")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- inspect: empty or ignored options


@pytest.mark.parametrize("args, code, message", [
    (["--text", ""], 2, "--text is empty"),
    (["--text", "   "], 2, "--text is empty"),
    (["--trace", ""], 2, "--trace is empty"),
    (["--trace-file", "{tmp}/empty.txt"], 1, "empty.txt: empty"),
    (["--text", "How many?", "--question", "5"], 2, "give --question or --text, not both"),
    (["--localisation", "1000000"], 2, "--localisation 1000000: the held-out set has"),
])
def test_inspect_refuses_empty_and_conflicting_inputs(run_dir, tmp_path, args, code, message):
    (tmp_path / "empty.txt").write_text("\n")
    one_error_line(invoke(["inspect", "--run", "{run}", *args], run_dir, tmp_path), code, message)


def test_terminal_escapes_in_shown_text_are_printed_as_escapes(run_dir, tmp_path):
    from minirl.viz import visible

    assert visible("a\x1b[2Jb\x07\n\tc") == "a\\x1b[2Jb\\x07\n\tc"
    result = invoke(["inspect", "--run", "{run}", "--text", "How many\x1b]0;pwned\x07 pens?", "--trace", "3 \x1b[2J"],
                    run_dir, tmp_path)
    assert result.exit_code == 0, result.output
    assert "\x1b]0;" not in result.output and "\x1b[2J" not in result.output and "\\x1b" in result.output


def test_the_lock_names_only_live_processes(tmp_path):
    for garbage in ("", "0", "-1", "99999999999999999999999"):  # none a live process: taken over
        (tmp_path / folders.LOCK).write_text(garbage)
        assert folders.running_pid(tmp_path) is None
    (tmp_path / folders.LOCK).write_text(str(os.getpid()))
    assert folders.running_pid(tmp_path) is None  # this process's own lock
    (tmp_path / folders.LOCK).write_text("not a pid")
    assert folders.running_pid(tmp_path) is None
    folders.lock(tmp_path)
    assert (tmp_path / folders.LOCK).read_text() == str(os.getpid())
    folders.unlock(tmp_path)
    assert not (tmp_path / folders.LOCK).exists()
    (tmp_path / folders.LOCK).mkdir()
    with pytest.raises(folders.RunError, match="is a folder, not minirl's lock file"):
        folders.running_pid(tmp_path)


def test_loading_a_missing_or_unfinished_run_says_which(run_dir, tmp_path):
    one_error_line(invoke(["rerank", "--run", "{tmp}/nowhere"], run_dir, tmp_path), 1, "nowhere: no such run folder")
    (tmp_path / "early").mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    (tmp_path / "early/config.json").write_text(json.dumps({**config, "config_hash": "0123456789abcdef"}))
    one_error_line(invoke(["inspect", "--run", "{tmp}/early"], run_dir, tmp_path), 1,
                   "early: no policy saved yet (the run stopped before its first evaluation)")


def test_rank_solutions_never_saves_its_samples_over_what_it_reads(run_dir, tmp_path):
    import importlib.util

    import typer

    spec = importlib.util.spec_from_file_location("rank_solutions", Path(__file__).parents[1] / "benchmarks" /
                                                  "rank_solutions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    solutions = tmp_path / "solutions.jsonl"
    solutions.write_text('{"question": "How many?", "response": "#### 3", "correct": true}\n')
    for samples in (solutions, run_dir / "summary.json"):
        with pytest.raises(typer.Exit) as stop:
            module.score(run_dir, solutions, samples)
        assert stop.value.exit_code == 1
    assert "How many?" in solutions.read_text() and not (run_dir / "summary.json").exists()


def test_loading_a_file_or_a_model_folder_as_a_run_says_what_it_is(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    one_error_line(invoke(["rerank", "--run", "{tmp}/notes.txt"], run_dir, tmp_path), 1,
                   "notes.txt: a file, not a run folder")
    one_error_line(invoke(["inspect", "--run", "{run}/policy"], run_dir, tmp_path), 1,
                   "policy: not a minirl run folder (no policy/ inside)")  # a model's config.json is no run's


def test_leave_out_with_gsm8k_data_is_refused(run_dir, tmp_path):
    one_error_line(invoke(["train", "--data", "train", "--init", "{run}", "--leave-out", "half_as_many", *OUT],
                          run_dir, tmp_path), 2, "--leave-out half_as_many keeps a misconception of the synthetic")


def test_the_reward_refuses_texts_it_cannot_score(run_dir):
    from minirl.reward import load_reward

    reward = load_reward(run_dir)
    assert len(reward.score(["How many?"], [""])) == 1  # an empty completion (TRL has them) is scored: its EOS
    for questions, responses, message in ((["  "], ["#### 3"], r"questions\[0\] is empty"),
                                          (["How many?"], ["3 \ud800"], r"responses\[0\] is not valid Unicode")):
        with pytest.raises(ValueError, match=message):
            reward.score(questions, responses)


def test_gguf_file_beside_an_init_that_is_a_gguf_file_is_refused(run_dir, tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    one_error_line(invoke(["train", "--algo", "sft", "--init", "{tmp}/model.gguf", "--gguf-file", "other.gguf",
                           *OUT], run_dir, tmp_path), 1, "is a .gguf file already")


def test_resume_refuses_a_data_file_replaced_since_the_checkpoint(run_dir, tmp_path):
    rows = [{"question": f"Tom has {i} pens and buys 4. How many pens?", "answer": f"{i} + 4 = {i + 4}\n#### {i + 4}"}
            for i in range(30)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [*SFT, "--data", "{tmp}/data.jsonl", "--n-demos", "10", "--eval-questions", "2", "--final-questions", "2",
            "--steps", "2", "--out", "{tmp}/run"]
    assert invoke(args, run_dir, tmp_path).exit_code == 0
    (tmp_path / "run/summary.json").unlink()  # as if killed after its last checkpoint
    data.write_text("".join(json.dumps({**r, "question": r["question"] + " Think."}) + "\n" for r in rows))
    one_error_line(invoke([*args, "--resume"], run_dir, tmp_path), 1, "the contents of --data or --test-data changed")

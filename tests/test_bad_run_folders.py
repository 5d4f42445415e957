"""Run folders and saved files that are not what they should be (found by a bad-input audit, 2026-11-29): each is
one `error:` line and an exit code, never a traceback or a hang, and nothing of a user's is deleted. The CLI helpers
and argument lists are test_bad_inputs.py's; runs are micro (seconds)."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_bad_inputs import AIRL, OUT, SFT, invoke, one_error_line


def finished_sft(run_dir: Path, tmp: Path, steps: int = 1) -> Path:
    """A finished micro SFT run in tmp/run, with a checkpoint of its last step."""
    result = invoke([*SFT, "--steps", str(steps), "--out", "{tmp}/run"], run_dir, tmp)
    assert result.exit_code == 0, result.output
    return tmp / "run"


# ---------------------------------------------------------------- --out: never clear what is not a run


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_out_folder_of_someone_elses_files_is_refused_and_left_alone(run_dir, tmp_path, overwrite):
    mine = tmp_path / "mine"
    (mine / "policy").mkdir(parents=True)
    (mine / "policy/notes.txt").write_text("precious")
    (mine / "metrics.jsonl").write_text('{"a": 1}\n')
    result = invoke([*SFT, "--out", "{tmp}/mine", *overwrite], run_dir, tmp_path)
    one_error_line(result, 1, "mine holds other files and no minirl run (no config.json)")
    assert (mine / "policy/notes.txt").read_text() == "precious"
    assert (mine / "metrics.jsonl").read_text() == '{"a": 1}\n'


def test_a_config_json_that_is_not_a_runs_is_never_overwritten(run_dir, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')  # a model folder, say
    result = invoke([*SFT, "--out", "{tmp}/model", "--overwrite"], run_dir, tmp_path)
    one_error_line(result, 1, "model/config.json is not a minirl run's")
    assert (model / "config.json").read_text() == '{"model_type": "llama"}'


def test_overwrite_replaces_a_run_whose_settings_cannot_be_read(run_dir, tmp_path):
    run = finished_sft(run_dir, tmp_path)
    (run / "config.json").write_text('{"algo": ')  # cut short
    one_error_line(invoke([*SFT, "--steps", "1", "--out", "{tmp}/run"], run_dir, tmp_path), 1,
                   "config.json: unreadable, empty or not a JSON object (the run's settings); --overwrite replaces")
    assert invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--overwrite"], run_dir, tmp_path).exit_code == 0
    assert "config_hash" in json.loads((run / "config.json").read_text())


def test_an_empty_out_folder_is_used(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/.DS_Store").write_text("")  # a file browser's: the folder still counts as empty
    assert invoke([*SFT, "--steps", "1", "--out", "{tmp}/empty"], run_dir, tmp_path).exit_code == 0
    assert (tmp_path / "empty/summary.json").is_file()


# ---------------------------------------------------------------- --resume: a checkpoint record of the wrong shape

GOOD = {"folder": "checkpoint-000001", "step": 1, "best_sampled_acc": 0.0, "best_step": 0, "metrics_lines": 2}
BROKEN = {"no metrics_lines": {k: v for k, v in GOOD.items() if k != "metrics_lines"}, "a list": [],
          "null": None, "folder a number": {**GOOD, "folder": 5}, "step text": {**GOOD, "step": "abc"},
          "negative step": {**GOOD, "step": -5}, "accuracy null": {**GOOD, "best_sampled_acc": None},
          "metrics_lines text": {**GOOD, "metrics_lines": "x"}, "folder outside": {**GOOD, "folder": "../policy"}}


@pytest.mark.parametrize("state", BROKEN.values(), ids=BROKEN.keys())
def test_a_checkpoint_record_of_the_wrong_shape_is_one_line(run_dir, tmp_path, state):
    run = finished_sft(run_dir, tmp_path)
    (run / "checkpoint.json").write_text(json.dumps(state))
    (run / "summary.json").unlink()  # an unfinished run: only that one is resumed
    result = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path)
    one_error_line(result, 1, "--resume: the checkpoint in")


@pytest.mark.parametrize("saved", [torch.zeros(2), [1, 2], {"policy": 5}], ids=["tensor", "list", "not a state"])
def test_an_optimiser_file_of_the_wrong_shape_is_one_line(run_dir, tmp_path, saved):
    run = finished_sft(run_dir, tmp_path)
    torch.save(saved, run / "checkpoint-000001/optim.pt")
    (run / "summary.json").unlink()  # an unfinished run: only that one is resumed
    result = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path)
    one_error_line(result, 1, "--resume: the checkpoint in")


def test_resuming_a_finished_run_is_refused_and_leaves_it_as_it_was(run_dir, tmp_path):
    run = finished_sft(run_dir, tmp_path)
    summary = (run / "summary.json").read_text()
    result = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path)
    one_error_line(result, 1, f"--resume: {run} holds a finished run, nothing to continue")
    assert (run / "summary.json").read_text() == summary


def test_resume_takes_another_spelling_of_the_same_starting_folder_but_not_another_folder(run_dir, tmp_path):
    run = finished_sft(run_dir, tmp_path)
    (run / "summary.json").unlink()  # an unfinished run: only that one is resumed
    other = tmp_path / "other-base"
    shutil.copytree(run_dir, other)
    refused = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume", "--init", str(other)], run_dir, tmp_path)
    one_error_line(refused, 1, "holds a run with other settings (init")
    respelt = f"{run_dir.parent}/./{run_dir.name}/"  # the same folder, written another way
    result = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume", "--init", respelt], run_dir, tmp_path)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "sampled_acc" in json.loads((run / "summary.json").read_text())


def test_a_metrics_line_cut_short_does_not_stop_a_resumed_run(run_dir, tmp_path):
    run = finished_sft(run_dir, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iter": 2, "s_sample": 0.1, "s_sc')  # a crash mid-write, inside the checkpoint's lines
    state = json.loads((run / "checkpoint.json").read_text())
    state["metrics_lines"] = len((run / "metrics.jsonl").read_text().splitlines())
    (run / "checkpoint.json").write_text(json.dumps(state))
    (run / "summary.json").unlink()
    result = invoke([*SFT, "--steps", "1", "--out", "{tmp}/run", "--resume"], run_dir, tmp_path)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "sampled_acc" in json.loads((run / "summary.json").read_text())


# ---------------------------------------------------------------- a run's saved settings and tokenizer

SETTINGS = [({"n_demos": "x"}, "config.json: n_demos 'x' is not a whole number"),
            ({"data": 5}, "config.json: data 5 is not text"),
            ({"temperature": "hot"}, "config.json: temperature 'hot' is not a number"),
            ({"seed": None}, "config.json: seed None is not a whole number"),
            ({"eval_questions": -3}, "config.json: eval-questions -3: must be at least 1"),
            ({"n_corpus": 10**12}, "ask for 1,000,000,000,150 distinct problems"),  # drawing them would hang
            ({"kl_beta": float("nan")}, "config.json: kl-beta nan: must be in [0, inf)")]


@pytest.mark.parametrize("change, message", SETTINGS, ids=[m for _, m in SETTINGS])
def test_a_saved_setting_of_the_wrong_type_or_range_is_one_line(run_dir, tmp_path, change, message):
    shutil.copytree(run_dir, tmp_path / "run")
    config = json.loads((tmp_path / "run/config.json").read_text())
    (tmp_path / "run/config.json").write_text(json.dumps({**config, **change}))
    for command in (["inspect", "--run", "{tmp}/run", "--question", "1"], ["rerank", "--run", "{tmp}/run"]):
        one_error_line(invoke(command, run_dir, tmp_path), 1, message)


@pytest.mark.parametrize("where, command, message", [
    ("policy", ["inspect", "--run", "{tmp}/run", "--question", "1"], "cannot load model"),
    ("reward/backbone", ["rerank", "--run", "{run}", "--reward-from", "{tmp}/run"], "cannot load model"),
    ("reward/backbone", [*AIRL, "--reward-from", "{tmp}/run", *OUT], "reward/backbone: no readable tokenizer"),
], ids=["policy", "reward backbone in rerank", "reward backbone in train"])
def test_a_malformed_tokenizer_is_one_line(run_dir, tmp_path, where, command, message):
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / where / "tokenizer.json").write_text("{}")  # JSON, but no tokenizer
    one_error_line(invoke(command, run_dir, tmp_path), 1, message)
    assert not (tmp_path / "out").exists()


def test_a_model_too_big_for_the_machine_is_refused_before_it_is_built(run_dir, tmp_path, monkeypatch):
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda key: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**18}.get(key) or real(key))
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run/policy/config.json").write_text('{"model_type": "llama"}')  # no sizes: transformers' 7B default
    one_error_line(invoke(["inspect", "--run", "{tmp}/run", "--question", "1"], run_dir, tmp_path), 1,
                   "its weights need about 25 GiB, more than this machine's 1 GiB")
    assert invoke(["inspect", "--run", "{run}", "--question", "1"], run_dir, tmp_path).exit_code == 0  # micro: fits


def test_the_memory_estimate_counts_grouped_kv_heads_and_tied_embeddings(monkeypatch):
    from transformers import LlamaConfig

    from minirl.models import ModelError, check_fits_in_memory

    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda key: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**22}.get(key) or real(key))
    llama3_8b = LlamaConfig(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, vocab_size=128256,
                            num_attention_heads=32, num_key_value_heads=8)  # 8,030,261,248 parameters: 29.9 GiB fp32
    with pytest.raises(ModelError, match="need about 30 GiB, more than this machine's 16 GiB"):
        check_fits_in_memory("llama-3-8b", llama3_8b, torch.float32)
    check_fits_in_memory("llama-3-8b", llama3_8b, torch.bfloat16)  # 15.0 GiB: fits in 16
    sizes = dict(hidden_size=4096, num_hidden_layers=1, intermediate_size=4096, vocab_size=2**19)
    check_fits_in_memory("tied", LlamaConfig(**sizes, tie_word_embeddings=True), torch.float32)  # 8 + 0.4 GiB
    with pytest.raises(ModelError, match="need about 16 GiB"):  # embeddings in and out: 2 x 8 GiB + 0.4
        check_fits_in_memory("untied", LlamaConfig(**sizes, tie_word_embeddings=False), torch.float32)

"""End to end on a micro model: pretrain (the loss falls), one AIRL run, resume, and the CLI's
one-line errors. Each run takes seconds: micro sizes, a few hundred problems."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from minirl import folders, runs
from minirl import train as train_module
from minirl.cli import app
from minirl.config import from_preset
from minirl.models import build_tiny_lm, load_lm, save_lm
from minirl.train import train

SMALL = dict(size="micro", n_corpus=300, n_demos=40, eval_questions=4, final_questions=4, eval_samples=2,
             max_new_tokens=40)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A micro base policy pretrained for 40 steps; returns (run folder, summary)."""
    out = tmp_path_factory.mktemp("runs") / "base"
    cfg = from_preset("tiny", "pretrain", out=str(out), steps=40, prompts_per_iter=16, eval_every=40, **SMALL)
    return out, train(cfg)


def test_pretrain_loss_falls_and_run_folder_is_complete(base_run):
    out, summary = base_run
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5  # cross-entropy falls on a tiny run
    for key in ("greedy_acc", "sampled_acc", "pass@2", "maj@2", "logprob_auroc", "wall_s"):
        assert key in summary
    assert json.loads((out / "summary.json").read_text())["wall_s"] == summary["wall_s"]
    policy, tokenizer, reward_model, config = runs.load_run(out)  # checkpoints reload
    assert reward_model is None and config["algo"] == "pretrain"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def airl_config(base, out, **kw):
    small = dict(steps=4, eval_every=2, disc_warmup=2, warmup_pool=4, prompts_per_iter=2, samples_per_prompt=2,
                 minibatch_size=4, disc_batch=2, **SMALL)
    return from_preset("tiny", "airl", init=str(base), out=str(out), **{**small, **kw})


def test_airl_run_writes_reward_model_and_timings(base_run, tmp_path):
    summary = train(airl_config(base_run[0], tmp_path / "airl"))
    for key in ("reward_auroc", "reward_auroc_pooled", "bo2_reward", "bo2_random", "s_sample_per_iter",
                "s_score_per_iter", "s_update_per_iter"):
        assert key in summary
    iters = [json.loads(x) for x in (tmp_path / "airl/metrics.jsonl").read_text().splitlines() if '"iter"' in x]
    assert [m["iter"] for m in iters] == [1, 2, 3, 4]
    assert all(abs(m["ratio_first"] - 1) < 1e-4 for m in iters)  # log-prob consistency (M4)
    assert {"disc_loss", "disc_acc_expert", "disc_acc_perturbed", "approx_kl", "clip_frac", "entropy"} <= set(iters[0])
    _, _, reward_model, _ = runs.load_run(tmp_path / "airl")
    assert reward_model is not None and reward_model.head_kind == "token"


@pytest.fixture(scope="module")
def whole_run(base_run, tmp_path_factory):
    """A 4-iteration AIRL run, never interrupted (checkpoints at iterations 2 and 4)."""
    out = tmp_path_factory.mktemp("runs") / "whole"
    train(airl_config(base_run[0], out))
    return out


def assert_same_weights(folder, other):
    """The policy and reward model of the final checkpoints (iteration 4) of two runs are equal."""
    for part in ("policy/model.safetensors", "reward/backbone/model.safetensors"):
        mine, theirs = load_file(folder / "checkpoint-000004" / part), load_file(other / "checkpoint-000004" / part)
        assert mine.keys() == theirs.keys()
        for name in mine:
            torch.testing.assert_close(mine[name], theirs[name], rtol=1e-5, atol=1e-6)


def test_a_reward_from_another_run_with_no_discriminator_steps_stays_frozen(base_run, whole_run, tmp_path,
                                                                             monkeypatch, capsys):
    """--reward-from starts the reward model as that run's (no warm-up); --disc-steps 0 never changes it, while
    --disc-steps 2 takes two discriminator steps per PPO iteration."""
    calls = []
    step = train_module.discriminator_step
    monkeypatch.setattr(train_module, "discriminator_step", lambda *a, **k: calls.append(1) or step(*a, **k))
    train(airl_config(base_run[0], tmp_path / "frozen", reward_from=str(whole_run), disc_steps=0))
    assert calls == []
    assert "no warm-up (--disc-warmup" in " ".join(capsys.readouterr().err.split())  # not silently ignored
    logged = [json.loads(x) for x in (tmp_path / "frozen/metrics.jsonl").read_text().splitlines()]
    assert not any("warmup_step" in m or "disc_loss" in m for m in logged)
    assert [m["iter"] for m in logged if "iter" in m] == [1, 2, 3, 4]
    given, kept = (load_file(f / "reward/backbone/model.safetensors") for f in (whole_run, tmp_path / "frozen"))
    assert given.keys() == kept.keys() and all(torch.equal(given[n], kept[n]) for n in given)

    train(airl_config(base_run[0], tmp_path / "two", disc_steps=2))
    assert len(calls) == 2 * 4  # two per iteration; the warm-up's steps are not counted here


def test_a_reward_from_another_run_says_nothing_of_the_presets_own_warm_up(base_run, whole_run, tmp_path, capsys):
    preset_warmup = from_preset("tiny", "airl").disc_warmup  # not the user's choice: no line about it
    train(airl_config(base_run[0], tmp_path / "quiet", reward_from=str(whole_run), disc_steps=0, steps=1,
                      eval_every=1, disc_warmup=preset_warmup))
    assert "no warm-up" not in " ".join(capsys.readouterr().err.split())


def test_resume_ends_where_an_uninterrupted_run_ends(base_run, whole_run, tmp_path, monkeypatch):
    checkpoint = runs.save_checkpoint

    def checkpoint_then_crash(*args, **kwargs):
        checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # the run dies right after its first checkpoint (iteration 2 of 4)

    monkeypatch.setattr(runs, "save_checkpoint", checkpoint_then_crash)
    cfg = airl_config(base_run[0], tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(runs, "save_checkpoint", checkpoint)
    train(replace(cfg, resume=True))

    assert_same_weights(tmp_path / "cut", whole_run)
    base = load_file(base_run[0] / "policy/model.safetensors")
    whole = load_file(whole_run / "checkpoint-000004/policy/model.safetensors")
    assert any(not torch.equal(base[n], whole[n]) for n in whole)  # training did change the policy


def test_a_crash_inside_a_checkpoint_write_leaves_the_previous_one_in_force(base_run, whole_run, tmp_path,
                                                                            monkeypatch):
    save, calls = runs.torch.save, []

    def full_disk_on_the_second_checkpoint(*args, **kwargs):  # optim.pt, written after policy/ and reward/
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return save(*args, **kwargs)

    monkeypatch.setattr(runs.torch, "save", full_disk_on_the_second_checkpoint)
    cfg = airl_config(base_run[0], tmp_path / "cut")
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    cut = tmp_path / "cut"
    assert folders.last_checkpoint(cut) == 2  # checkpoint.json still names the complete checkpoint of iteration 2
    assert (cut / "checkpoint-000004/policy").is_dir() and not (cut / "checkpoint-000004/optim.pt").exists()
    monkeypatch.setattr(runs.torch, "save", save)
    train(replace(cfg, resume=True))

    assert_same_weights(cut, whole_run)
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-000004"]
    # metrics.jsonl was cut back to the checkpoint's step on --resume: no row twice, the same rows as the whole run
    logged, whole = ([json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
                     for folder in (cut, whole_run))
    for key in ("warmup_step", "iter", "eval_step"):
        assert [m[key] for m in logged if key in m] == [m[key] for m in whole if key in m]
    assert [m["iter"] for m in logged if "iter" in m] == [1, 2, 3, 4]
    for mine, theirs in zip(logged, whole):
        if "iter" in mine:
            assert mine["disc_loss"] == pytest.approx(theirs["disc_loss"], rel=1e-4)


@pytest.mark.parametrize("args, code, message", [  # exit code 2: a usage error; 1: a bad file or data
    (["train", "--algo", "bogus"], 2, "--algo 'bogus': choose from"),
    (["train", "--preset", "nope"], 2, "unknown preset"),
    (["train", "--algo", "sft", "--data", "missing.jsonl", "--init", "runs/nowhere"], 1, "no such"),
    (["train", "--leave-out", "bogus", "--algo", "pretrain"], 2, "--leave-out 'bogus': choose from"),
    (["rerank", "--run", "/nonexistent/run"], 1, "/nonexistent/run: no such run folder"),
])
def test_cli_errors_are_one_line(args, code, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code
    assert "Traceback" not in result.output
    lines = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output


def test_gpu_check_says_when_there_is_no_gpu():
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run tutorial/gpu_check.py itself")
    script = Path(__file__).resolve().parents[1] / "tutorial/gpu_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no CUDA device" in done.stdout


def test_lora_airl_run_saves_merged_plain_checkpoints(base_run, tmp_path):
    pytest.importorskip("peft")
    summary = train(airl_config(base_run[0], tmp_path / "lora", steps=2, lora_rank=4, grad_checkpointing=True))
    assert "reward_auroc" in summary
    policy, _, reward_model, _ = runs.load_run(tmp_path / "lora")  # merged: loads as a plain model
    assert not hasattr(policy, "peft_config") and reward_model is not None
    base = load_file(base_run[0] / "policy/model.safetensors")
    tuned = load_file(tmp_path / "lora/checkpoint-000002/policy/model.safetensors")
    assert base.keys() == tuned.keys()  # no adapter names leak into the saved weights


@pytest.mark.parametrize("changes,expected", [
    ({}, True), ({"ppo_epochs": 2}, False), ({"minibatch_size": 32}, False), ({"kl_beta": 0.05}, False),
    ({"advantage": "gae"}, False), ({"algo": "airl"}, False), ({"micro_batch_size": 16}, True)])
def test_the_scoring_pass_is_skipped_only_for_one_on_policy_step(changes, expected):
    from minirl.train import on_policy_update
    cfg = replace(from_preset("tiny", "outcome", ppo_epochs=1, minibatch_size=64, kl_beta=0.0), **changes)
    assert on_policy_update(cfg, 64) is expected


def test_a_lone_final_evaluation_is_left_to_finish(base_run, tmp_path):
    """eval_every >= steps: the last step would be the only candidate, so the loop does not evaluate it and the
    final evaluation (finish) is the one evaluation; with --steps 0 the starting policy is not evaluated twice."""
    out, summary = base_run
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert not [m for m in logged if "eval_step" in m] and summary["best_step"] == 40
    assert (out / "policy/model.safetensors").exists() and "sampled_acc" in summary
    reward_only = train(airl_config(out, tmp_path / "reward", steps=0))
    logged = [json.loads(x) for x in (tmp_path / "reward/metrics.jsonl").read_text().splitlines()]
    assert not [m for m in logged if "eval_step" in m] and [m["warmup_step"] for m in logged] == [1, 2]
    assert "reward_auroc" in reward_only


def test_the_best_checkpoint_is_chosen_on_validation_problems_never_on_test_ones(base_run, tmp_path, monkeypatch):
    """Every evaluation during training (the start's included) reads the validation problems; only the final one,
    whose figures are reported, reads test problems: a checkpoint is never chosen by the problems it reports on."""
    from minirl.data import load_tasks

    seen = []

    def recording(cfg, policy, tokenizer, tasks, *args, **kwargs):
        seen.append({t["question"] for t in tasks})
        return evaluate(cfg, policy, tokenizer, tasks, *args, **kwargs)

    from minirl import evaluation

    evaluate = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", recording)  # every evaluation of a run goes through this module
    cfg = airl_config(base_run[0], tmp_path / "airl")
    train(cfg)
    data = load_tasks(cfg)
    valid, test = ({t["question"] for t in data[part]} for part in ("valid", "test"))
    assert len(seen) == 4 and seen[:3] == [valid] * 3  # iterations 0, 2 and 4
    assert seen[3] == {t["question"] for t in data["test"][: cfg.final_questions]} and not valid & test


def test_bf16_on_a_cpu_uses_plain_matmul_attention(tmp_path):
    from minirl.data import load_tasks
    from minirl.models import load_policy

    cfg = from_preset("tiny", "pretrain", out=str(tmp_path), **SMALL)
    data = load_tasks(cfg)
    assert load_policy(cfg, data)[0].config._attn_implementation == "sdpa"
    assert load_policy(replace(cfg, precision="bf16-mixed"), data)[0].config._attn_implementation == "eager"


def test_reward_size_gives_the_reward_model_a_pretrained_backbone_of_that_size(base_run, tmp_path, monkeypatch):
    """--reward-size: the reward model starts from the pretraining run runs/base-<size>-s<seed> (built when missing:
    here a stand-in of another width is saved there), not from a copy of the policy (M2, M9); --resume continues."""
    monkeypatch.chdir(tmp_path)
    built = []

    def stand_in(pretraining):  # what ensure_pretrained would build: a tiny-size model with the world's tokenizer
        built.append(pretraining)
        _, tokenizer = load_lm(str(base_run[0]))
        save_lm(build_tiny_lm(tokenizer, "tiny"), tokenizer, Path(pretraining.out) / "policy")

    monkeypatch.setattr(train_module, "ensure_pretrained", stand_in)
    checkpoint = runs.save_checkpoint

    def checkpoint_then_crash(*args, **kwargs):
        checkpoint(*args, **kwargs)
        raise KeyboardInterrupt  # after iteration 2 of 4: --resume must find the same settings

    monkeypatch.setattr(runs, "save_checkpoint", checkpoint_then_crash)
    cfg = airl_config(base_run[0], tmp_path / "airl", reward_size="small")
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(runs, "save_checkpoint", checkpoint)
    train(replace(cfg, resume=True))
    assert len(built) == 2 and built[0] == built[1]
    pretraining = built[0]
    assert (pretraining.algo, pretraining.size, pretraining.out, pretraining.n_corpus) == (
        "pretrain", "small", "runs/base-small-s0", 300)
    assert json.loads((tmp_path / "airl/config.json").read_text())["reward_init"] == "runs/base-small-s0"
    policy, _, reward_model, _ = runs.load_run(tmp_path / "airl")
    assert (policy.config.hidden_size, reward_model.lm.config.hidden_size) == (64, 128)

"""Training: warm start and SFT (M6), and the AIRL / outcome-RL loop (M2-M4), in one place.

`train(cfg)` is what `minirl train` calls. It prepares the data and models, then runs
  - `pretrain` / `sft`: completion-only cross-entropy (`train_sft`), or
  - `airl` / `outcome`: the RL loop (`train_rl`). Each iteration reads
        sample -> reward -> advantages -> PPO update,
    one call each, with an evaluation on validation problems and a checkpoint every `eval_every` iterations.
Lines marked `ALGO LOGIC` are the ones a student is meant to change (as in CleanRL).
The run folder it writes is described in `minirl.runs`.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from minirl import folders, runs
from minirl.airl import (
    anchor_weight,
    check_reward_from,
    discriminator_step,
    make_reward_model,
    negatives,
    policy_rewards,
    sampled,
    warm_up_discriminator,
)
from minirl.config import (
    NumericalError,
    TrainConfig,
    base_policy,
    check,
    default_out,
    from_preset,
    reward_backbone,
)
from minirl.data import check_sizes, format_prompt, is_correct, load_tasks
from minirl.evaluation import evaluate_and_keep_best, finish
from minirl.fit_reward import check_train_layers, fit_reward
from minirl.logprobs import lm_forward, token_logprobs
from minirl.models import (
    autocast,
    check_model_paths,
    frozen_copy,
    hidden_size,
    load_policy,
)
from minirl.ppo import Rollout, gae_advantages, group_advantages, outcome_advantages, ppo_update, trace_means, whiten
from minirl.rollout import Batch, check_data_fits, encode, in_chunks, sample
from minirl.sft import sft_step


def train(cfg: TrainConfig) -> dict:
    """Run one training job described by `cfg`; returns the summary. Options, the run folder and the data are
    checked before any work, and a refused run creates no folder. A NaN or infinite loss, reward or gradient
    stops the run with a `NumericalError` (the last checkpoint kept, nothing non-finite saved)."""
    check(cfg)
    check_model_paths(cfg)  # before minutes of pretraining a base policy, not after
    if cfg.reward_from:  # its reward folder, head and form now; its tokenizer once the policy's is loaded
        check_reward_from(cfg)
    base, backbone = base_policy(cfg), reward_backbone(cfg)
    if base is not None:
        cfg = replace(cfg, init=base.out)
    if backbone is not None:
        cfg = replace(cfg, reward_init=backbone.out)
    folder = Path(cfg.out) if cfg.out else default_out(cfg)
    folders.check_folder(folder, cfg)
    data = load_tasks(cfg)
    check_sizes(cfg, data)
    for pretrained in (base, backbone):
        if pretrained is not None:
            ensure_pretrained(pretrained)
    policy, tokenizer = load_policy(cfg, data)
    if cfg.data != "synthetic":  # a data file's problems may be longer than the model's context
        check_data_fits(policy, tokenizer, data, cfg.max_new_tokens, cfg.data)
    if cfg.reward_from:  # refused before the run folder exists
        check_reward_from(cfg, tokenizer)
    # M2; built before the run folder exists, so that a bad --reward-init or --reward-from leaves no folder behind
    reward_model = make_reward_model(cfg, policy, tokenizer) if cfg.algo in ("airl", "reward") else None
    if cfg.algo == "reward":
        check_train_layers(cfg, reward_model.lm)
    run = runs.start(folder, cfg)
    try:
        if cfg.algo in ("pretrain", "sft"):
            return train_sft(cfg, run, policy, tokenizer, data)
        if cfg.algo == "reward":
            return fit_reward(cfg, run, policy, tokenizer, data, reward_model)
        return train_rl(cfg, run, policy, tokenizer, data, reward_model)
    except NumericalError as e:
        raise runs.stopped(run, e) from None
    finally:
        folders.unlock(folder)


def ensure_pretrained(base: TrainConfig) -> None:
    """Reuse a tiny preset's pretrained model (the base policy, or the reward backbone of `--reward-size`) when it
    was trained with these settings, build it when missing."""
    folder = Path(base.out)
    if (folder / "summary.json").exists():
        folders.check_reusable(folder, replace(base, resume=True), code=False)  # same settings, or one clear line
        return
    step = folders.last_checkpoint(folder)
    if step is not None and not folders.differences(folder, base):  # an interrupted build: continued, not redone
        runs.console.print(f"[yellow]the base model at {folder} was interrupted: continuing from step {step}[/]")
        train(replace(base, resume=True))
        return
    took = "about 30 minutes at one thread" if base.size == "small" else "a few minutes"
    runs.console.print(f"[yellow]no base model at {folder}: pretraining it first ({took})[/]")
    train(base)


# ---------------------------------------------------------------- warm start and SFT (M6)


def train_sft(cfg: TrainConfig, run: runs.Run, policy, tokenizer, data: dict) -> dict:
    tasks = data["corpus" if cfg.algo == "pretrain" else "demos"]
    device = next(policy.parameters()).device
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - 0.9 * s / max(1, cfg.steps))
    optimizers = {"policy": optimizer, "schedule": schedule}
    start, best_acc, best_step = runs.resume(run, cfg, policy, optimizers)
    prompts = [format_prompt(t["question"], tokenizer) for t in tasks]
    lone_final = cfg.eval_every >= cfg.steps  # the last step would be the only candidate: finish() evaluates it
    policy.train()
    for step in run.progress(range(start, cfg.steps), "sft" if cfg.algo == "sft" else "pretrain"):
        rng = random.Random(cfg.seed * 100_003 + step)  # the data order depends only on (seed, step)
        idx = [rng.randrange(len(tasks)) for _ in range(cfg.prompts_per_iter)]
        batch = encode(tokenizer, [prompts[i] for i in idx], [tasks[i]["answer"] for i in idx]).to(device)
        loss, grad_norm = sft_step(policy, optimizer, batch, cfg.micro_batch_size, cfg.precision)
        schedule.step()
        run.log({"step": step + 1, "loss": loss, "grad_norm": grad_norm, "lr": schedule.get_last_lr()[0]})
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            if not lone_final:
                best_acc, best_step = evaluate_and_keep_best(cfg, run, step + 1, best_acc, best_step, policy,
                                                             tokenizer, data["valid"])
            runs.save_checkpoint(run, step + 1, best_acc, best_step, policy, tokenizer, optimizers)
            policy.train()
    return finish(cfg, run, policy, tokenizer, data["test"], best_step=cfg.steps if lone_final else best_step)


# ---------------------------------------------------------------- AIRL and outcome RL (M2-M4)


def chunk_rows(cfg: TrainConfig) -> int:
    """Rows scored in one forward pass: as many as a gradient step holds at once."""
    return cfg.micro_batch_size or cfg.minibatch_size


@torch.no_grad()
def score_samples(cfg: TrainConfig, policy, value_head, batch: Batch):
    """log pi_old of every sampled token at the sampling temperature, the value estimates (gae), and log pi at
    temperature 1 (what the `airl` form subtracts, M2). Scored in chunks of `chunk_rows` rows. Each [B, T]."""
    with autocast(cfg.precision, batch.input_ids.device):  # as the PPO update's forward, so the first ratio is 1
        old_logp, _, old_values = in_chunks(lambda b, _: lm_forward(
            policy, b.input_ids, b.attention_mask, cfg.temperature, value_head), batch, chunk_rows(cfg))
        logp_at_t1 = old_logp if cfg.temperature == 1.0 else in_chunks(
            lambda b, _: token_logprobs(policy, b.input_ids, b.attention_mask), batch, chunk_rows(cfg))
    return old_logp, old_values, logp_at_t1


def airl_rewards(cfg: TrainConfig, rng: random.Random, reward_model, disc_optimizer, policy, tokenizer,
                 demos: list[dict], tasks: list[dict], batch: Batch,
                 logp_at_t1: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """M2: `disc_steps` discriminator steps (1 by default) on experts vs these samples and perturbed experts (M3),
    then the per-token reward of every sample under the updated discriminator, [B*G, T]. The stats returned are
    the last step's (none when the reward is frozen)."""
    samples = sampled(batch, tokenizer, [t["question"] for t in tasks]) if cfg.disc_steps else []  # the ids (M2)
    stats = {}
    for _ in range(cfg.disc_steps):  # ALGO LOGIC: how fast the discriminator follows the policy (0: frozen)
        experts = rng.sample(demos, cfg.disc_batch)
        own_samples, perturbed = negatives(experts, samples, cfg.perturbed_per_expert, rng)
        stats = discriminator_step(reward_model, disc_optimizer, policy, tokenizer, experts,
                                   rng.sample(own_samples, min(len(own_samples), cfg.disc_batch)), perturbed,
                                   cfg.form, cfg.label_smoothing, micro_batch_size=cfg.micro_batch_size,
                                   precision=cfg.precision, labels=cfg.perturbed_labels,
                                   change_share=cfg.change_share, nll_weight=anchor_weight(cfg))
    reward_model.eval()
    with autocast(cfg.precision, batch.input_ids.device):  # after the step: autocast's weight copies are fresh
        rewards = in_chunks(lambda b, rows: policy_rewards(reward_model, b, cfg.form, logp_at_t1[rows],
                                                           cfg.reward_clip, cfg.entropy_coef), batch, chunk_rows(cfg))
    return rewards, stats


def outcome_rewards(batch: Batch, texts: list[str], tasks: list[dict]) -> torch.Tensor:
    """M6: 1 at the last response token when the final answer is right, 0 elsewhere. [B, T]"""
    rewards = torch.zeros(batch.input_ids.shape, device=batch.input_ids.device)
    last = batch.response_mask.cumsum(1).argmax(1)  # index of each row's last response token
    rewards[torch.arange(len(tasks)), last] = torch.tensor(
        [float(is_correct(text, t["answer"])) for text, t in zip(texts, tasks)], device=rewards.device)
    return rewards


@torch.no_grad()
def kl_to_reference(cfg: TrainConfig, reference, batch: Batch, old_logp: torch.Tensor) -> torch.Tensor:
    """M4: the per-token KL estimate log pi - log pi_ref (k1) on response tokens, [B, T]."""
    with autocast(cfg.precision, batch.input_ids.device):
        ref_logp = in_chunks(lambda b, _: token_logprobs(reference, b.input_ids, b.attention_mask, cfg.temperature),
                             batch, chunk_rows(cfg))
    return (old_logp - ref_logp) * batch.response_mask


def estimate_advantages(cfg: TrainConfig, rewards: torch.Tensor, old_values, mask: torch.Tensor):
    """M4: (advantages, returns); `gae` with the value head's estimates, or critic-free over each prompt's
    samples_per_prompt samples (returns None): for outcome RL one number per trace (M6), for the dense reward
    the paper's `group` estimator, its leave-one-out variant `loo`, or `trace`: each trace's mean reward (what
    PPO is paid, KL penalty included) treated as its outcome."""
    if cfg.advantage == "gae":
        return gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.algo == "outcome":
        return outcome_advantages((rewards * mask).sum(1), mask, cfg.samples_per_prompt), None
    if cfg.advantage == "trace":  # ALGO LOGIC: the dense reward's mean per trace, paid as one outcome (M4)
        return outcome_advantages(trace_means(rewards, mask), mask, cfg.samples_per_prompt), None
    return group_advantages(rewards, mask, cfg.samples_per_prompt, cfg.gamma, cfg.advantage), None


def make_optimizers(cfg: TrainConfig, policy, value_head, reward_model) -> dict:
    """AdamW for the policy (and value head), its linear decay to 10 %, and AdamW for the reward model."""
    params = list(policy.parameters()) + (list(value_head.parameters()) if value_head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - 0.9 * s / max(1, cfg.steps))
    optimizers = {"policy": optimizer, "schedule": schedule}
    if reward_model is not None:
        optimizers["disc"] = torch.optim.AdamW(reward_model.parameters(), lr=cfg.disc_lr, weight_decay=0.0)
    return optimizers


def train_rl(cfg: TrainConfig, run: runs.Run, policy, tokenizer, data: dict, reward_model=None) -> dict:
    """The RL loop (M2-M4): `rl_iteration` after `rl_iteration`, a validation evaluation and a checkpoint every
    `eval_every` iterations; the starting policy is evaluated first and kept unless training beats it."""
    device = next(policy.parameters()).device
    value_head = nn.Linear(hidden_size(policy), 1).to(device) if cfg.advantage == "gae" else None
    reward_model = reward_model.to(device) if reward_model is not None else None  # AIRL's (outcome RL: none)
    optimizers = make_optimizers(cfg, policy, value_head, reward_model)
    reference = frozen_copy(policy) if cfg.kl_beta > 0 else None  # M4: KL anchor
    start, best_acc, best_step = runs.resume(run, cfg, policy, optimizers, reward_model, value_head)
    if start == 0:  # the starting policy is a candidate too: training must beat it to replace it
        if cfg.steps > 0:  # (with no training it is the only one, and finish() evaluates it)
            best_acc, best_step = evaluate_and_keep_best(cfg, run, 0, best_acc, best_step, policy, tokenizer,
                                                         data["valid"])
        if reward_model is not None and not cfg.reward_from:  # a reward from another run is trained already
            warm_up_discriminator(cfg, run, reward_model, optimizers["disc"], policy, tokenizer, data["demos"],
                                  data["rl"])
        elif cfg.reward_from and cfg.disc_warmup != from_preset(cfg.preset, cfg.algo).disc_warmup:  # asked for
            runs.console.print(f"[yellow]the reward model of {cfg.reward_from} is trained already: no warm-up "
                               f"(--disc-warmup {cfg.disc_warmup} not used)[/]")
    for it in run.progress(range(start, cfg.steps), cfg.algo):
        run.log(rl_iteration(cfg, it, policy, tokenizer, data, optimizers, value_head, reward_model, reference))
        if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.steps:
            best_acc, best_step = evaluate_and_keep_best(cfg, run, it + 1, best_acc, best_step, policy, tokenizer,
                                                         data["valid"], reward_model)
            runs.save_checkpoint(run, it + 1, best_acc, best_step, policy, tokenizer, optimizers, reward_model,
                                 value_head)
    return finish(cfg, run, policy, tokenizer, data["test"], reward_model, best_step)


def rl_iteration(cfg: TrainConfig, it: int, policy, tokenizer, data: dict, optimizers: dict, value_head=None,
                 reward_model=None, reference=None) -> dict:
    """One iteration (M2-M4): sample G completions for each of B prompts; their per-token rewards (AIRL: after one
    discriminator step; outcome: correctness); advantages; a PPO update. Returns what it logs, timings included."""
    device = next(policy.parameters()).device
    torch.manual_seed(cfg.seed * 100_003 + it)  # sampling depends only on (seed, iteration): resumable
    rng = random.Random(cfg.seed * 100_003 + it)
    prompts = rng.sample(data["rl"], cfg.prompts_per_iter)  # B prompts, each answered G times: a group
    tasks = [t for t in prompts for _ in range(cfg.samples_per_prompt)]  # the task of each of the B*G rows
    t0 = time.perf_counter()

    # 1. sample: G answers to each of B prompts from the current policy (M4)
    policy.eval()
    with autocast(cfg.precision, device):  # bf16 matmuls on the fp32 weights under bf16-mixed
        batch = sample(policy, tokenizer, [format_prompt(t["question"], tokenizer) for t in prompts],
                       cfg.max_new_tokens, cfg.temperature, cfg.top_p, n=cfg.samples_per_prompt)
    texts, t1 = batch.texts(tokenizer), time.perf_counter()

    # 2. reward: the learned dense reward (M2) or the outcome (M6), minus the KL penalty (M4)
    if on_policy_update(cfg, len(tasks)):  # pi_old = pi: the update's own log-probs serve (speed, docs/speed.md)
        old_logp = old_values = logp_at_t1 = None
    else:
        old_logp, old_values, logp_at_t1 = score_samples(cfg, policy, value_head, batch)
    if reward_model is not None:  # ALGO LOGIC: what the policy is paid
        rewards, stats = airl_rewards(cfg, rng, reward_model, optimizers["disc"], policy, tokenizer, data["demos"],
                                      tasks, batch, logp_at_t1)
    else:
        rewards, stats = outcome_rewards(batch, texts, tasks), {}
    mask = batch.response_mask.float()  # [B*G, T]
    stats["reward_per_seq"] = (rewards * mask).sum(1).mean().item()
    if reference is not None:  # ALGO LOGIC: r_t - beta (log pi - log pi_ref)
        kl = kl_to_reference(cfg, reference, batch, old_logp)
        rewards, stats["kl_ref"] = rewards - cfg.kl_beta * kl, kl.sum(1).mean().item()
    t2 = time.perf_counter()

    # 3. advantages (M4), then 4. the PPO update
    advantages, returns = estimate_advantages(cfg, rewards, old_values, mask)
    rollout = Rollout(batch, old_logp, whiten(advantages, mask), returns, old_values)
    policy.train()
    stats.update(ppo_update(policy, value_head, optimizers["policy"], rollout, cfg.ppo_epochs, cfg.minibatch_size,
                            cfg.temperature, cfg.clip, target_kl=cfg.target_kl,
                            micro_batch_size=cfg.micro_batch_size, precision=cfg.precision,
                            samples_per_prompt=cfg.samples_per_prompt))
    optimizers["schedule"].step()
    t3 = time.perf_counter()
    train_acc = sum(is_correct(text, t["answer"]) for text, t in zip(texts, tasks)) / len(tasks)
    return {**stats, "iter": it + 1, "train_acc": train_acc, "response_len": mask.sum(1).mean().item(),
            "s_sample": t1 - t0, "s_score": t2 - t1, "s_update": t3 - t2}


def on_policy_update(cfg: TrainConfig, rows: int) -> bool:
    """Is the PPO update one optimiser step on the whole rollout, with nothing else needing log pi_old (no AIRL
    reward, no KL, no value head)? Then pi_old is the policy being updated: its log-probs in the update's own
    forward pass (detached) are log pi_old, and the scoring pass is skipped (the step is bitwise the same where
    the scoring pass saw the same rows at once; else it differs by float rounding, and the first ratio is 1)."""
    return (cfg.algo == "outcome" and cfg.ppo_epochs == 1 and cfg.minibatch_size >= rows and cfg.kl_beta == 0
            and cfg.advantage != "gae")

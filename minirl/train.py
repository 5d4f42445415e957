"""Training: warm start and SFT (M6), and the AIRL / outcome-RL loop (M2-M4), in one place.

`train(cfg)` is what `minirl train` calls. It prepares the data and models, then runs
  - `pretrain` / `sft`: completion-only cross-entropy (`train_sft`), or
  - `airl` / `outcome`: the RL loop (`train_rl`): sample -> (discriminator step) -> score
    -> advantages -> PPO update, with held-out evaluation and a checkpoint every
    `eval_every` iterations.
Every run writes a folder: config.json, metrics.jsonl, summary.json, policy/ (the best
checkpoint by held-out sampled accuracy), reward/ (AIRL), checkpoint/ (the latest, with
optimiser state, for --resume).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from minirl import runs
from minirl.airl import discriminator_step, negatives, policy_rewards
from minirl.config import TrainConfig, UserError
from minirl.data import format_prompt, is_correct
from minirl.models import hidden_size, lm_forward, token_logprobs
from minirl.ppo import Rollout, gae_advantages, group_advantages, ppo_update, whiten
from minirl.rollout import encode, in_chunks, sample


def train(cfg: TrainConfig) -> dict:
    """Run one training job described by `cfg`; returns the summary."""
    if cfg.algo not in ("pretrain", "sft", "airl", "outcome"):
        raise UserError(f"unknown algo {cfg.algo!r}; choose pretrain, sft, airl or outcome")
    if cfg.algo != "pretrain" and cfg.preset == "tiny" and not cfg.init:
        cfg = replace(cfg, init=runs.ensure_base_policy(cfg))
    out = Path(cfg.out) if cfg.out else runs.default_out(cfg)
    run = runs.start(out, cfg)
    data = runs.load_data(cfg)
    policy, tokenizer = runs.load_policy(cfg, data)
    if cfg.algo in ("pretrain", "sft"):
        tasks = data["corpus"] if cfg.algo == "pretrain" else data["demos"]
        return train_sft(cfg, run, policy, tokenizer, tasks, data["test"])
    return train_rl(cfg, run, policy, tokenizer, data)


# ---------------------------------------------------------------- warm start and SFT (M6)


def sft_loss(policy: nn.Module, batch) -> torch.Tensor:
    """M6: cross-entropy on completion tokens only, mean over tokens."""
    logp = token_logprobs(policy, batch.input_ids, batch.attention_mask)  # [B, T]
    mask = batch.response_mask.float()
    return -(logp * mask).sum() / mask.sum()


def train_sft(cfg: TrainConfig, run: runs.Run, policy, tokenizer, tasks: list[dict], test: list[dict]) -> dict:
    device = next(policy.parameters()).device
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - 0.9 * s / max(1, cfg.steps))
    start = runs.resume(run, cfg, policy, tokenizer, {"policy": optimizer, "schedule": schedule})
    prompts = [format_prompt(t["question"], tokenizer) for t in tasks]
    policy.train()
    for step in run.progress(range(start, cfg.steps), "sft" if cfg.algo == "sft" else "pretrain"):
        rng = random.Random(cfg.seed * 100_003 + step)  # the data order depends only on (seed, step)
        idx = [rng.randrange(len(tasks)) for _ in range(cfg.prompts_per_iter)]
        batch = encode(tokenizer, [prompts[i] for i in idx], [tasks[i]["answer"] for i in idx]).to(device)
        loss = sft_loss(policy, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        run.log({"step": step + 1, "loss": loss.item(), "lr": schedule.get_last_lr()[0]})
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            runs.evaluate_and_checkpoint(run, cfg, step + 1, policy, tokenizer, test,
                                         optimizers={"policy": optimizer, "schedule": schedule})
    return runs.finish(run, cfg, policy, tokenizer, test)


# ---------------------------------------------------------------- AIRL and outcome RL (M2-M4)


def train_rl(cfg: TrainConfig, run: runs.Run, policy, tokenizer, data: dict) -> dict:
    """The RL loop. Each iteration: sample G completions for each of B prompts; (AIRL) one
    discriminator step on experts vs these samples; per-token rewards; advantages; PPO."""
    device = next(policy.parameters()).device
    demos, rl_tasks, test = data["demos"], data["rl"], data["test"]
    B, G = cfg.prompts_per_iter, cfg.samples_per_prompt
    value_head = nn.Linear(hidden_size(policy), 1).to(device) if cfg.advantage == "gae" else None
    params = list(policy.parameters()) + (list(value_head.parameters()) if value_head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - 0.9 * s / max(1, cfg.steps))
    reference = runs.frozen_copy(policy) if cfg.kl_beta > 0 else None  # M4: KL anchor
    reward_model = disc_optimizer = None
    optimizers = {"policy": optimizer, "schedule": schedule}
    if cfg.algo == "airl":
        reward_model = runs.load_reward_model(cfg, policy, tokenizer).to(device)
        disc_optimizer = torch.optim.AdamW(reward_model.parameters(), lr=cfg.disc_lr, weight_decay=0.0)
        optimizers["disc"] = disc_optimizer
    start = runs.resume(run, cfg, policy, tokenizer, optimizers, reward_model, value_head)
    if reward_model is not None and start == 0:
        runs.warm_up_discriminator(cfg, run, reward_model, disc_optimizer, policy, tokenizer, demos)

    for it in run.progress(range(start, cfg.steps), cfg.algo):
        torch.manual_seed(cfg.seed * 100_003 + it)  # sampling depends only on (seed, iteration): resumable
        rng = random.Random(cfg.seed * 100_003 + it)
        tasks = [rl_tasks[i] for i in rng.sample(range(len(rl_tasks)), B) for _ in range(G)]  # groups of G
        timer = {"t0": time.perf_counter()}

        # 1. rollouts from the current policy (M4)
        policy.eval()
        prompts = [format_prompt(t["question"], tokenizer) for t in tasks]
        batch = sample(policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        texts = batch.texts(tokenizer)
        timer["sample"] = time.perf_counter()

        # 2. the reward: AIRL's discriminator step then dense reward (M2), or outcome (M6)
        stats: dict[str, float] = {}
        with torch.no_grad():  # scored in chunks of minibatch_size rows, to bound memory
            old_logp, _, old_values = in_chunks(lambda b, _: lm_forward(
                policy, b.input_ids, b.attention_mask, cfg.temperature, value_head), batch, cfg.minibatch_size)
            logp_t1 = old_logp if cfg.temperature == 1.0 else in_chunks(
                lambda b, _: token_logprobs(policy, b.input_ids, b.attention_mask), batch, cfg.minibatch_size)
        if reward_model is not None:
            experts = rng.sample(demos, cfg.disc_batch)
            own, perturbed = negatives(experts, [(t["question"], x) for t, x in zip(tasks, texts)],
                                       cfg.perturbed_per_expert, rng)
            stats.update(discriminator_step(reward_model, disc_optimizer, policy, tokenizer, experts,
                                            rng.sample(own, min(len(own), cfg.disc_batch)), perturbed, cfg.form,
                                            cfg.label_smoothing))
            reward_model.eval()
            rewards = in_chunks(lambda b, rows, logp=logp_t1: policy_rewards(
                reward_model, b, cfg.form, logp[rows], cfg.reward_clip), batch, cfg.minibatch_size)  # [B*G, T]
        else:  # M6: 1 at the last response token when the final answer is right
            rewards = torch.zeros_like(old_logp)
            last = batch.response_mask.cumsum(1).argmax(1)  # index of each row's last response token
            rewards[torch.arange(len(tasks)), last] = torch.tensor(
                [float(is_correct(x, t["answer"])) for x, t in zip(texts, tasks)], device=device)
        mask = batch.response_mask.float()
        stats["reward_per_seq"] = ((rewards * mask).sum(1)).mean().item()
        if reference is not None:  # M4: r_t - beta (log pi - log pi_ref), k1 estimator
            with torch.no_grad():
                ref_logp = in_chunks(lambda b, _: token_logprobs(reference, b.input_ids, b.attention_mask,
                                                                 cfg.temperature), batch, cfg.minibatch_size)
            kl = (old_logp - ref_logp) * mask
            rewards = rewards - cfg.kl_beta * kl
            stats["kl_ref"] = (kl.sum(1)).mean().item()
        timer["score"] = time.perf_counter()

        # 3. advantages (M4), then the PPO update
        if value_head is not None:
            advantages, returns = gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)
        else:
            advantages, returns = group_advantages(rewards, mask, G, cfg.gamma), None
        rollout = Rollout(batch, old_logp, whiten(advantages, mask), returns, old_values)
        policy.train()
        stats.update(ppo_update(policy, value_head, optimizer, rollout, cfg.ppo_epochs, cfg.minibatch_size,
                                cfg.temperature, cfg.clip))
        schedule.step()
        timer["update"] = time.perf_counter()

        stats.update({"iter": it + 1, "train_acc": sum(is_correct(x, t["answer"]) for x, t in zip(texts, tasks))
                      / len(tasks), "response_len": mask.sum(1).mean().item(),
                      "s_sample": timer["sample"] - timer["t0"], "s_score": timer["score"] - timer["sample"],
                      "s_update": timer["update"] - timer["score"]})
        run.log(stats)
        if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.steps:
            runs.evaluate_and_checkpoint(run, cfg, it + 1, policy, tokenizer, test, optimizers,
                                         reward_model, value_head)
    return runs.finish(run, cfg, policy, tokenizer, test, reward_model)

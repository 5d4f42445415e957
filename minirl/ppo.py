"""PPO for language models, written to be read (method.md M4).

Sections, in the order of one iteration (sampling itself is in `minirl.rollout`):
  1. advantages: `gae` (value head, GAE over tokens) and `group` (critic-free, the paper's);
  2. the PPO loss: clipped surrogate + clipped value loss;
  3. `ppo_update`: epochs x shuffled minibatches (each optionally in micro-batches whose gradients are
     accumulated), gradient clipping, an optional KL early stop, diagnostics.
The training loop that calls these lives in `minirl.train.train_rl`. Shapes: B rows (sequences), T tokens;
every per-token tensor is aligned with `input_ids` and zero outside the response (`mask`).
Lines marked `ALGO LOGIC` are the ones to change in an experiment (as in CleanRL).

Departures from textbook PPO, on purpose: one "step" is one token; the reward arrives
per token (dense, from the reward model) rather than once per episode; there is no
entropy bonus (entropy is only logged); and rollouts are sampled with the same
temperature that divides the logits when training, so the first epoch's ratio is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minirl.logprobs import lm_forward, lm_forward_shared_prompts
from minirl.models import autocast
from minirl.rollout import Batch, micro_batches

# ---------------------------------------------------------------- 1. advantages


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the masked entries (M4)."""
    mean = masked_mean(x, mask)  # scalar
    std = masked_mean((x - mean) ** 2, mask).sqrt()  # scalar
    return (x - mean) / (std + 1e-8) * mask  # [B, T]


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over response tokens (M4): delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lam A_{t+1}; after the last response token V = A = 0.
    All [B, T]; returns (advantages, returns = A + V)."""
    mask = mask.float()
    adv = torch.zeros_like(rewards)  # [B, T]
    next_value = next_adv = torch.zeros_like(rewards[:, 0])  # [B]
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        adv[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value, next_adv = values[:, t] * mask[:, t], adv[:, t]
    return adv, (adv + values) * mask


def discounted_to_go(x: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """A_t = sum_{k>=t} gamma^(k-t) x_k over response tokens (M4). [B, T] -> [B, T]"""
    out = torch.zeros_like(x)
    running = torch.zeros_like(x[:, 0])  # [B]
    for t in reversed(range(x.shape[1])):
        running = x[:, t] + gamma * running * mask[:, t]
        out[:, t] = running * mask[:, t]
    return out


def trace_means(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each trace's mean token reward over its response tokens (M4's score s_i). [B, T] -> [B]"""
    return (rewards * mask).sum(1) / mask.sum(1).clamp(min=1)


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, gamma: float = 0.9,
                     baseline: str = "group") -> torch.Tensor:
    """The paper's critic-free estimator for dense rewards (M4; its code's `_grpo_dense`). Rows come in groups
    of `group_size` samples of one prompt. Each trace's score is its *mean* token reward s_i; with the group's
    mean mu and std sd (ddof 1) of those scores every token reward becomes r~_it = (r_it - mu) / (sd + 1e-4),
    and the advantage is the discounted reward-to-go A_t = sum_{k>=t} gamma^(k-t) r~_k.
    One departure: a group whose scores tie (sd <= 1e-6 (1 + |mu|), e.g. G identical samples, which differ
    only by float noise) is centred but not divided, where the paper's 1e-4 would multiply its within-trace
    differences by 10^4 and let that group swamp the batch.
    `baseline="loo"` is the paper's leave-one-out variant (`_prime_dense`): r~_it = r_it - the mean score of
    the *other* traces of the group, not divided.
    What is left of the trace length: a trace whose token rewards all equal mu gets 0 whatever its length, but
    a constant offset c = r - mu adds up over the tokens to go (c (T - t) at gamma = 1, at most c / (1 - gamma)
    otherwise): at gamma near 1 a longer trace gets a larger advantage of the same sign. [B, T] -> [B, T]"""
    mask = mask.float()
    B = rewards.shape[0]
    scores = trace_means(rewards, mask).view(-1, group_size)  # [B/G, G] mean reward
    if baseline == "loo":  # ALGO LOGIC: the baseline each token reward is compared with
        others = (scores.sum(1, keepdim=True) - scores) / max(group_size - 1, 1)  # [B/G, G]
        normed = (rewards - others.reshape(B, 1)) * mask
    else:
        mu = scores.mean(1, keepdim=True)  # [B/G, 1]
        sd = scores.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(mu)
        scale = torch.where(sd > 1e-6 * (1 + mu.abs()), sd + 1e-4, torch.ones_like(sd))  # ties: not divided
        normed = (rewards - mu.repeat_interleave(group_size, 0)) / scale.repeat_interleave(group_size, 0) * mask
    return discounted_to_go(normed, mask, gamma)


def outcome_advantages(trace_rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """GRPO for one reward per trace (M6; the paper's `_grpo_sparse`): A_i = (R_i - mu) / (sd + 1e-4) with the
    group's mean and std (ddof 0) of R, the same at every response token, so the trace length plays no part.
    trace_rewards [B], mask [B, T] -> [B, T]"""
    grouped = trace_rewards.view(-1, group_size)  # [B/G, G]
    adv = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True, unbiased=False) + 1e-4)
    return adv.reshape(-1, 1) * mask.float()


# ---------------------------------------------------------------- 2. the loss


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
             clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """M4: clipped surrogate, L = -E[min(rho A, clip(rho, 1-eps, 1+eps) A)], token mean.
    logp, old_logp, advantages, mask: [B, T]."""
    log_ratio = logp - old_logp  # [B, T]
    ratio = log_ratio.exp()  # [B, T] rho = pi / pi_old
    surrogate = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))  # ALGO LOGIC [B, T]
    loss = masked_mean(surrogate, mask)  # scalar: mean over response tokens
    with torch.no_grad():
        stats = {"approx_kl": masked_mean(ratio - 1 - log_ratio, mask).item(),  # k3 estimator
                 "clip_frac": masked_mean(((ratio - 1).abs() > clip).float(), mask).item(),
                 "ratio": masked_mean(ratio, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """M4: clipped value loss, 0.5 E[max((V - R)^2, (V_old + clip(V - V_old) - R)^2)]. All inputs [B, T]."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)  # [B, T]
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)  # scalar


# ---------------------------------------------------------------- 3. the update


@dataclass
class Rollout:
    """One iteration's samples and what PPO needs of them (M4)."""

    batch: Batch
    old_logp: torch.Tensor | None  # [B, T] log pi_old(y_t) under the sampling policy, temperature applied;
    # None when the update is one step on the whole rollout: then pi_old = pi, and the step's own log-probs serve
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor | None = None  # [B, T], gae only
    old_values: torch.Tensor | None = None  # [B, T], gae only


def minibatch_loss(lm: nn.Module, value_head: nn.Module | None, rollout: Rollout, idx: torch.Tensor,
                   temperature: float, clip: float, vf_coef: float, precision: str,
                   shared_prompts: int = 1) -> tuple[torch.Tensor, dict]:
    """The PPO loss of rollout rows `idx` (M4): clipped surrogate + vf_coef x clipped value loss, token means,
    and its diagnostics. The forward pass runs under `precision` (models.autocast); the loss in fp32. With
    `shared_prompts` = n > 1 the rows are whole groups of n sharing a prompt, which then runs once per group."""
    mb = rollout.batch.select(idx)
    mask = mb.response_mask.float()  # [b, T]
    with autocast(precision, mb.input_ids.device):
        if shared_prompts > 1:  # speed only (docs/speed.md): the same log-probs up to float rounding
            logp, entropy, values = lm_forward_shared_prompts(lm, mb.input_ids, mb.attention_mask, mb.prompt_len,
                                                              shared_prompts, temperature, True)
        else:
            logp, entropy, values = lm_forward(lm, mb.input_ids, mb.attention_mask, temperature, value_head,
                                               True)  # each [b, T], fp32
    old_logp = logp.detach() if rollout.old_logp is None else rollout.old_logp[idx]  # [b, T]
    loss, stats = ppo_loss(logp, old_logp, rollout.advantages[idx], mask, clip)  # scalar
    stats["entropy"] = masked_mean(entropy, mask).item()
    if value_head is not None:
        v_loss = value_loss(values, rollout.old_values[idx], rollout.returns[idx], mask, clip)  # scalar
        loss = loss + vf_coef * v_loss  # ALGO LOGIC: the weight of the value loss
        stats["value_loss"] = v_loss.item()
    return loss, stats


def ppo_update(lm: nn.Module, value_head: nn.Module | None, optimizer: torch.optim.Optimizer, rollout: Rollout,
               epochs: int, minibatch_size: int, temperature: float = 1.0, clip: float = 0.2,
               vf_coef: float = 0.5, max_grad_norm: float = 1.0, target_kl: float = 0.0,
               micro_batch_size: int = 0, precision: str = "fp32", samples_per_prompt: int = 1) -> dict[str, float]:
    """`epochs` passes over the rollout in shuffled minibatches of the clipped objective; with `target_kl` > 0
    the update stops after the epoch whose mean approx-KL exceeds it (a trust region by early stopping, as
    CleanRL's `target_kl`). A minibatch may be split into chunks of `micro_batch_size` rows whose gradients
    add up to the minibatch's: the loss is a token mean, so each chunk's is weighted by its share of the
    minibatch's tokens. When one minibatch holds the whole rollout (no value head, no micro-batches), its rows
    stay in their groups of `samples_per_prompt` and each group's prompt runs once (speed only). Returns averaged
    diagnostics."""
    batch_size = rollout.batch.input_ids.shape[0]  # the rollout size: prompts x samples per prompt
    minibatches_per_epoch = -(-batch_size // minibatch_size)  # one optimiser step each
    if rollout.old_logp is None and epochs * minibatches_per_epoch > 1:
        raise ValueError("old_logp=None only for one optimiser step on the whole rollout (pi_old = pi)")
    shared = samples_per_prompt if (minibatches_per_epoch == 1 and value_head is None and micro_batch_size in
                                    (0, batch_size) and batch_size % samples_per_prompt == 0) else 1
    params = [p for group in optimizer.param_groups for p in group["params"]]
    tokens = rollout.batch.response_mask.float().sum(1)  # [B] response tokens per row
    logs: dict[str, list[float]] = {}
    epochs_done = 0
    for _ in range(epochs):
        order = torch.randperm(batch_size) if shared == 1 else torch.arange(batch_size)  # one minibatch: any order
        for idx in order.split(minibatch_size):  # minibatches_per_epoch index sets
            optimizer.zero_grad(set_to_none=True)
            stats: dict[str, float] = {}
            for chunk in micro_batches(idx, micro_batch_size):  # one chunk unless micro_batch_size is set
                share = (tokens[chunk].sum() / tokens[idx].sum().clamp(min=1)).item()  # of the token mean
                loss, chunk_stats = minibatch_loss(lm, value_head, rollout, chunk, temperature, clip, vf_coef,
                                                   precision, shared)
                (loss * share).backward()  # gradients add up over the chunks
                for k, v in chunk_stats.items():  # token means too: weighted the same way
                    stats[k] = stats.get(k, 0.0) + v * share
            stats["grad_norm"] = nn.utils.clip_grad_norm_(params, max_grad_norm).item()
            optimizer.step()
            for k, v in stats.items():
                logs.setdefault(k, []).append(v)
        epochs_done += 1
        epoch_kl = sum(logs["approx_kl"][-minibatches_per_epoch:]) / minibatches_per_epoch
        if target_kl > 0 and epoch_kl > target_kl:  # ALGO LOGIC: the early stop
            break
    out = {k: sum(v) / len(v) for k, v in logs.items()}
    out["ratio_first"] = logs["ratio"][0]  # 1.0 up to float error: the log-prob consistency check
    out["epochs_done"] = epochs_done
    if rollout.returns is not None:  # explained variance of the value predictions
        mask = rollout.batch.response_mask.bool()
        ret, val = rollout.returns[mask], rollout.old_values[mask]  # [N] each, N response tokens
        out["explained_var"] = (1 - (ret - val).var() / ret.var().clamp(min=1e-8)).item()
    return out

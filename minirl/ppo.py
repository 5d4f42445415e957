"""PPO for language models, written to be read (method.md M4).

Sections, in the order of one iteration:
  1. batches and sampling: left-padded prompts, KV-cache sampling, EOS masks;
  2. advantages: `gae` (value head, GAE over tokens) and `group` (critic-free, the paper's);
  3. the PPO loss: clipped surrogate + clipped value loss;
  4. `ppo_update`: epochs x shuffled minibatches, gradient clipping, diagnostics.
The training loop that calls these lives in `minirl.train.train_rl`.

Departures from textbook PPO, on purpose: one "step" is one token; the reward arrives
per token (dense, from the reward model) rather than once per episode; there is no
entropy bonus (entropy is only logged); and rollouts are sampled with the same
temperature that divides the logits when training, so the first epoch's ratio is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minirl.models import lm_forward, position_ids

# ---------------------------------------------------------------- 1. batches and sampling


@dataclass
class Batch:
    """Prompts left-padded to `prompt_len`, responses right-padded after them."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    response_mask: torch.Tensor  # [B, T] 1 on response tokens up to and including the first EOS
    prompt_len: int

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
                     self.prompt_len)

    def select(self, index: torch.Tensor | list[int]) -> Batch:
        index = torch.as_tensor(index, device=self.input_ids.device)
        return Batch(self.input_ids[index], self.attention_mask[index], self.response_mask[index], self.prompt_len)

    def texts(self, tokenizer) -> list[str]:
        """The response text of each row (EOS and padding dropped)."""
        rows = [ids[m.bool()] for ids, m in zip(self.input_ids.cpu(), self.response_mask.cpu())]
        return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]


def in_chunks(fn, batch: Batch, size: int):
    """fn(sub_batch, rows) over chunks of `size` rows, outputs concatenated along rows: scoring a
    whole rollout at once would hold [B, T, vocab] logits, too much for a 150k vocabulary."""
    outs = [fn(batch.select(rows), rows) for rows in torch.arange(len(batch.input_ids)).split(size)]
    if isinstance(outs[0], tuple):
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def first_eos_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on every token up to and including the first EOS of each row, 0 after it, [B, R].
    Counting EOS *before* each position means a pad token equal to EOS hides nothing (M4)."""
    is_eos = (tokens == eos_id).long()
    return ((is_eos.cumsum(-1) - is_eos) == 0).long()


def make_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> Batch:
    P = max(len(p) for p in prompt_ids)
    R = max((len(r) for r in response_ids), default=0)
    rows, attn, resp = [], [], []
    for p, r in zip(prompt_ids, response_ids):
        rows.append([pad_id] * (P - len(p)) + p + r + [pad_id] * (R - len(r)))
        attn.append([0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r)))
        resp.append([0] * P + [1] * len(r) + [0] * (R - len(r)))
    return Batch(torch.tensor(rows), torch.tensor(attn), torch.tensor(resp), P)


def encode(tokenizer, prompts: list[str], responses: list[str] | None = None) -> Batch:
    """Tokenize prompts and (complete) responses separately, EOS appended to each response,
    exactly as sampling produces them: the two paths see the same token ids."""
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    if responses is None:
        response_ids = [[] for _ in prompts]
    else:
        response_ids = [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for r in responses]
    return make_batch(prompt_ids, response_ids, tokenizer.pad_token_id)


def top_p_sample(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Sample from the smallest set of tokens whose probability reaches top_p. [B, V] -> [B]"""
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the token that crosses top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        return order.gather(-1, torch.multinomial(sorted_p, 1)).squeeze(-1)
    return torch.multinomial(probs, 1).squeeze(-1)


@torch.no_grad()
def sample(lm: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0) -> Batch:
    """Batched sampling with the KV cache; temperature 0 means greedy."""
    device = next(lm.parameters()).device
    batch = encode(tokenizer, prompts).to(device)
    mask = batch.attention_mask
    step_ids, pos, cache = batch.input_ids, position_ids(mask), None
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    new_tokens = []
    for _ in range(max_new_tokens):
        out = lm(input_ids=step_ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                 logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1].float()  # [B, V]
        token = logits.argmax(-1) if temperature == 0 else top_p_sample(logits / temperature, top_p)
        token = token.masked_fill(finished, tokenizer.pad_token_id)
        mask = torch.cat([mask, (~finished).long()[:, None]], dim=1)  # the EOS itself is attended
        finished |= token == tokenizer.eos_token_id
        new_tokens.append(token)
        step_ids, pos = token[:, None], pos[:, -1:] + 1
        if finished.all():
            break
    response = torch.stack(new_tokens, dim=1)  # [B, R]
    response_mask = first_eos_mask(response, tokenizer.eos_token_id)
    return Batch(torch.cat([batch.input_ids, response], 1), torch.cat([batch.attention_mask, response_mask], 1),
                 F.pad(response_mask, (batch.prompt_len, 0)), batch.prompt_len)


# ---------------------------------------------------------------- 2. advantages


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the masked entries (M4)."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + 1e-8) * mask


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over response tokens (M4): delta_t = r_t + gamma V_{t+1} - V_t,
    A_t = delta_t + gamma lam A_{t+1}; after the last response token V = A = 0.
    All [B, T]; returns (advantages, returns = A + V)."""
    mask = mask.float()
    adv = torch.zeros_like(rewards)
    next_value = next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value, next_adv = values[:, t] * mask[:, t], adv[:, t]
    return adv, (adv + values) * mask


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int,
                     gamma: float = 0.9) -> torch.Tensor:
    """The paper's critic-free estimator (M4). Rows come in groups of `group_size` samples
    of one prompt. With trace reward R_i = sum_t r_it and the group's mean mu and std sd,
    r~_it = (r_it - mu / T_i) / sd, so that sum_t r~_it = (R_i - mu) / sd; then the
    discounted reward-to-go A_t = sum_{k>=t} gamma^(k-t) r~_k. When a group's trace rewards
    tie (sd = 0) it is centred but not divided. [B, T] -> [B, T]"""
    mask = mask.float()
    B, T = rewards.shape
    trace = (rewards * mask).sum(1).view(-1, group_size)  # [B/G, G]
    mu = trace.mean(1, keepdim=True).expand(-1, group_size).reshape(B, 1)
    sd = trace.std(1, keepdim=True) if group_size > 1 else torch.ones_like(trace[:, :1])
    sd = sd.expand(-1, group_size).reshape(B, 1)
    length = mask.sum(1, keepdim=True).clamp(min=1)
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))  # a group whose traces tie is not rescaled
    normed = (rewards - mu / length) / sd * mask
    adv = torch.zeros_like(normed)
    running = torch.zeros_like(normed[:, 0])
    for t in reversed(range(T)):
        running = normed[:, t] + gamma * running * mask[:, t]
        adv[:, t] = running * mask[:, t]
    return adv


# ---------------------------------------------------------------- 3. the loss


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
             clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """M4: clipped surrogate, L = -E[min(rho A, clip(rho, 1-eps, 1+eps) A)], token mean."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    surrogate = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    loss = masked_mean(surrogate, mask)
    with torch.no_grad():
        stats = {"approx_kl": masked_mean(ratio - 1 - log_ratio, mask).item(),  # k3 estimator
                 "clip_frac": masked_mean(((ratio - 1).abs() > clip).float(), mask).item(),
                 "ratio": masked_mean(ratio, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """M4: clipped value loss, 0.5 E[max((V - R)^2, (V_old + clip(V - V_old) - R)^2)]."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


# ---------------------------------------------------------------- 4. the update


@dataclass
class Rollout:
    batch: Batch
    old_logp: torch.Tensor  # [B, T] under the sampling policy, temperature applied
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor | None = None  # [B, T], gae only
    old_values: torch.Tensor | None = None  # [B, T], gae only


def ppo_update(lm: nn.Module, value_head: nn.Module | None, optimizer: torch.optim.Optimizer, rollout: Rollout,
               epochs: int, minibatch_size: int, temperature: float = 1.0, clip: float = 0.2,
               vf_coef: float = 0.5, max_grad_norm: float = 1.0) -> dict[str, float]:
    """Epochs x shuffled minibatches of the clipped objective; returns averaged diagnostics."""
    B = rollout.batch.input_ids.shape[0]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    logs: dict[str, list[float]] = {}
    for _ in range(epochs):
        for idx in torch.randperm(B).split(minibatch_size):
            mb = rollout.batch.select(idx)
            mask = mb.response_mask.float()
            logp, entropy, values = lm_forward(lm, mb.input_ids, mb.attention_mask, temperature, value_head, True)
            loss, stats = ppo_loss(logp, rollout.old_logp[idx], rollout.advantages[idx], mask, clip)
            stats["entropy"] = masked_mean(entropy, mask).item()
            if value_head is not None:
                v_loss = value_loss(values, rollout.old_values[idx], rollout.returns[idx], mask, clip)
                loss = loss + vf_coef * v_loss
                stats["value_loss"] = v_loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"] = nn.utils.clip_grad_norm_(params, max_grad_norm).item()
            optimizer.step()
            for k, v in stats.items():
                logs.setdefault(k, []).append(v)
    out = {k: sum(v) / len(v) for k, v in logs.items()}
    out["ratio_first"] = logs["ratio"][0]  # 1.0 up to float error: the log-prob consistency check
    if rollout.returns is not None:  # explained variance of the value predictions
        mask = rollout.batch.response_mask.bool()
        ret, val = rollout.returns[mask], rollout.old_values[mask]
        out["explained_var"] = (1 - (ret - val).var() / ret.var().clamp(min=1e-8)).item()
    return out

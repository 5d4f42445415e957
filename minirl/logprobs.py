"""Log-probs: the one place log pi(y_t | x, y_<t) is computed (sampling, PPO, the discriminator and evaluation all
call it, so the sampling temperature is applied identically, M4), with the entropy and a value head's estimates.

Batches use the layout of minirl.models: prompts left-padded, responses right-padded, `input_ids` [B, T]; every
per-token array is aligned with the token it scores (column 0 = 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on the first real token of each left-padded row (M4)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def logprobs_of(logits: torch.Tensor, input_ids: torch.Tensor, shifted: bool = False) -> torch.Tensor:
    """log softmax(logits)[next token] aligned with that token, [B, T] (column 0 = 0). `logits` [B, T, V] from
    the model, or [B, T-1, V] already cut to the positions that predict a token (`shifted`)."""
    logits = (logits if shifted else logits[:, :-1]).float()
    logz = torch.logsumexp(logits, dim=-1)  # [B, T-1]
    return F.pad(logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - logz, (1, 0))


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """log pi of each response token from `logits` [B, R, V] taken at the R positions that predict them (the
    prompt's last position onwards), [B, T] with 0 on the prompt columns."""
    return F.pad(logprobs_of(logits, input_ids[:, prompt_len - 1:], shifted=True)[:, 1:], (prompt_len, 0))


@torch.no_grad()
def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """The entropy of each position's next-token distribution, [B, N] from logits [B, N, V] (a diagnostic)."""
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def lm_forward(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               temperature: float = 1.0, value_head: nn.Module | None = None, with_entropy: bool = False):
    """One forward pass -> (logp, entropy, values), each [B, T] and aligned with the token
    it concerns (column 0 = 0): logp[:, t] = log pi(y_t | y_<t) with the logits divided by
    the sampling temperature (M4); values[:, t] = V(state before y_t) from `value_head`.
    entropy and values are None unless asked for."""
    out = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
             output_hidden_states=value_head is not None)
    logits = out.logits[:, :-1].float() / temperature  # [B, T-1, V]: position t predicts token t+1
    logp = logprobs_of(logits, input_ids, shifted=True)  # [B, T]
    entropy = F.pad(entropy_of(logits), (1, 0)) if with_entropy else None
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, :-1]  # [B, T-1, H]
        values = F.pad(value_head(hidden.float()).squeeze(-1).float(), (1, 0))  # fp32 also under autocast
    return logp, entropy, values


def lm_forward_shared_prompts(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                              n: int, temperature: float = 1.0, with_entropy: bool = False):
    """`lm_forward` (logp, entropy, None) for rows in groups of `n` that share one prompt (rows g*n .. g*n+n-1, as
    `rollout.sample(..., n=n)` lays them out): each prompt runs once and its keys and values, gradients and all,
    are copied to its n rows, which then run their responses only. The same numbers up to float rounding, on
    response positions (prompt columns are 0); the prompt's share of the work is done once instead of n times."""
    P, mask = prompt_len, attention_mask[::n, :prompt_len]
    first = lm(input_ids=input_ids[::n, :P], attention_mask=mask, position_ids=position_ids(mask), use_cache=True,
               logits_to_keep=1)  # [B/n, 1, V]: the prompt's last position predicts the first response token
    first.cache.batch_repeat_interleave(n)  # differentiable: each row's gradient flows back into its prompt
    rest = lm(input_ids=input_ids[:, P:], attention_mask=attention_mask, cache=first.cache,
              position_ids=position_ids(attention_mask)[:, P:])  # [B, R, V]
    logits = torch.cat([first.logits.repeat_interleave(n, 0), rest.logits[:, :-1]], 1).float() / temperature
    entropy = F.pad(entropy_of(logits), (P, 0)) if with_entropy else None
    return response_logprobs(logits, input_ids, P), entropy, None


def token_logprobs(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """log pi(y_t | y_<t) for every token, [B, T] (column 0 = 0)."""
    return lm_forward(lm, input_ids, attention_mask, temperature)[0]

"""Supervised fine-tuning (method.md M6): cross-entropy on the completion tokens, the warm start and the SFT baseline.

`train.train_sft` runs these steps for `--algo pretrain` (on the misconception corpus) and `--algo sft` (on the
expert demonstrations).
"""

from __future__ import annotations

import torch
from torch import nn

from minirl.logprobs import token_logprobs
from minirl.models import autocast
from minirl.rollout import Batch, micro_batches


def sft_loss(policy: nn.Module, batch: Batch) -> torch.Tensor:
    """M6: cross-entropy on completion tokens only, mean over tokens."""
    logp = token_logprobs(policy, batch.input_ids, batch.attention_mask)  # [B, T]
    mask = batch.response_mask.float()
    return -(logp * mask).sum() / mask.sum()


def sft_step(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, micro_batch_size: int = 0,
             precision: str = "fp32") -> tuple[float, float]:
    """One optimiser step of `sft_loss` on `batch`, its gradient accumulated over chunks of `micro_batch_size`
    rows (0: one chunk): the loss is a token mean, so each chunk's is weighted by its share of the tokens.
    Returns (loss, gradient norm before clipping)."""
    tokens = batch.response_mask.float().sum(1)  # [B] completion tokens per row
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for rows in micro_batches(torch.arange(len(tokens), device=tokens.device), micro_batch_size):
        with autocast(precision, tokens.device):  # the forward pass only (models.autocast)
            loss = sft_loss(policy, batch.select(rows)) * (tokens[rows].sum() / tokens.sum())
        loss.backward()
        total += loss.item()
    grad_norm = nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    return total, grad_norm.item()

"""The discriminator: expert tokens vs policy tokens (method.md M2, M3).

The reward model gives every response token a learned reward f_t (`RewardModel`). The
discriminator turns it into a per-token probability that the token came from an expert:
  `logit` form (GAIL-style, the paper's code):  D_t = sigmoid(f_t)
  `airl`  form (Fu et al. 2018):                D_t = sigmoid(f_t - log pi(y_t | s_t))
and is trained with token-level binary cross-entropy (M2): response tokens only, each
sequence's loss divided by its length, label smoothing, classes weighted equally.
The policy is paid the discriminator's logit, log D_t - log(1 - D_t): that is f_t in the
`logit` form and f_t - log pi(y_t | s_t) in the `airl` form (`policy_rewards`).

Before PPO starts, `warm_up_discriminator` trains it on the starting policy's own samples, so
that the first rewards already mean something (M2, M9).

Left out on purpose: gradient penalties and replay buffers of old samples; one
discriminator step per rollout batch, as in the paper.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from minirl.config import TrainConfig
from minirl.data import format_prompt, perturb
from minirl.models import RewardModel, check_same_tokenizer, load_lm, pick_device, token_logprobs
from minirl.rollout import Batch, encode, sample_answers
from minirl.runs import Run


def discriminator_logits(reward_model: RewardModel, batch: Batch, form: str,
                         policy_logp: torch.Tensor | None = None) -> torch.Tensor:
    """M2: the logit of D_t for every token, [B, T]. `policy_logp` (detached log pi, [B, T])
    is required by the `airl` form."""
    f = reward_model(batch.input_ids, batch.attention_mask)  # [B, T]
    if form == "logit":
        return f
    if form != "airl":
        raise ValueError(f"unknown discriminator form {form!r}; choose 'airl' or 'logit'")
    return f - policy_logp.detach()


def discriminator_loss(logits: torch.Tensor, response_mask: torch.Tensor, is_expert: torch.Tensor,
                       label_smoothing: float = 0.1) -> torch.Tensor:
    """M2: token-level BCE on response tokens, per-sequence length-normalised, targets
    1 - s/2 (expert) and s/2 (policy), the two classes weighted equally.
    logits, response_mask: [B, T]; is_expert: [B] bool."""
    mask = response_mask.float()
    target = torch.where(is_expert, 1 - label_smoothing / 2, label_smoothing / 2)[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # [B, T]
    per_seq = (bce * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
    return 0.5 * per_seq[is_expert].mean() + 0.5 * per_seq[~is_expert].mean()


@torch.no_grad()
def discriminator_stats(logits: torch.Tensor, response_mask: torch.Tensor, source: list[str]) -> dict[str, float]:
    """Accuracy and mean per-token logit for each source ("expert", "policy", "perturbed"):
    a sequence is called expert when its mean token logit is above 0 (mean D > 1/2)."""
    mask = response_mask.float()
    mean_logit = (logits * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
    stats = {}
    for name in ("expert", "policy", "perturbed"):
        rows = [i for i, s in enumerate(source) if s == name]
        if rows:
            said_expert = (mean_logit[rows] > 0).float().mean().item()
            stats[f"disc_acc_{name}"] = said_expert if name == "expert" else 1 - said_expert
            stats[f"disc_logit_{name}"] = mean_logit[rows].mean().item()
    return stats


def policy_rewards(reward_model: RewardModel, batch: Batch, form: str, policy_logp: torch.Tensor,
                   clip: float = 0.0) -> torch.Tensor:
    """M2: the per-token reward paid to PPO, log D_t - log(1 - D_t) = the discriminator's
    logit, on response tokens (0 elsewhere), optionally clipped to [-clip, clip]. [B, T]"""
    with torch.no_grad():
        r = discriminator_logits(reward_model, batch, form, policy_logp)
    if clip > 0:
        r = r.clamp(-clip, clip)
    return r * batch.response_mask


def negatives(expert_tasks: list[dict], samples: list[tuple[str, str]], k_perturbed: int,
              rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Negative (question, response) pairs (M3): the policy's samples, except any identical
    to an expert trace of the same question (M9: they made the loss stall at log 2); and
    `k_perturbed` corrupted copies of each expert trace. Returns (policy, perturbed)."""
    expert = {t["question"]: t["answer"].strip() for t in expert_tasks}
    policy = [(q, r) for q, r in samples if expert.get(q) != r.strip()]
    perturbed = []
    for t in expert_tasks:
        for _ in range(k_perturbed):
            got = perturb(t["answer"], rng)
            if got is not None:
                perturbed.append((t["question"], got[0]))
    return policy, perturbed


def discriminator_step(reward_model: RewardModel, optimizer: torch.optim.Optimizer, policy, tokenizer,
                       experts: list[dict], policy_pairs: list[tuple[str, str]], perturbed_pairs: list[tuple[str, str]],
                       form: str, label_smoothing: float = 0.1, max_grad_norm: float = 1.0) -> dict[str, float]:
    """One optimiser step of the discriminator on experts (label 1) vs the policy's samples
    and perturbed experts (label 0); returns the loss and per-source diagnostics."""
    device = next(reward_model.parameters()).device
    pairs = [(t["question"], t["answer"]) for t in experts] + policy_pairs + perturbed_pairs
    source = ["expert"] * len(experts) + ["policy"] * len(policy_pairs) + ["perturbed"] * len(perturbed_pairs)
    batch = encode(tokenizer, [format_prompt(q, tokenizer) for q, _ in pairs], [r for _, r in pairs]).to(device)
    is_expert = torch.tensor([s == "expert" for s in source], device=device)
    policy_logp = None
    if form == "airl":
        with torch.no_grad():
            policy_logp = token_logprobs(policy, batch.input_ids, batch.attention_mask)
    reward_model.train()
    logits = discriminator_logits(reward_model, batch, form, policy_logp)
    loss = discriminator_loss(logits, batch.response_mask, is_expert, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reward_model.parameters(), max_grad_norm)
    optimizer.step()
    return {"disc_loss": loss.item(), **discriminator_stats(logits.detach(), batch.response_mask, source)}


def make_reward_model(cfg: TrainConfig, policy, tokenizer) -> RewardModel:
    """M2: the reward model starts as a copy of the policy's weights, or from its own backbone (`reward_init`),
    which must cut text into the same tokens."""
    if not cfg.reward_init:
        lm = copy.deepcopy(policy)
    else:
        lm, reward_tokenizer = load_lm(str(Path(cfg.reward_init).expanduser()), dtype=pick_device()[1])
        check_same_tokenizer(tokenizer, reward_tokenizer)
    return RewardModel(lm.train(), cfg.head)


def warm_up_discriminator(cfg: TrainConfig, run: Run, reward_model: RewardModel, optimizer: torch.optim.Optimizer,
                          policy, tokenizer, demos: list[dict]) -> None:
    """M2 before PPO: `disc_warmup` steps on experts vs the starting policy's own samples of the demonstration
    problems (4 each; those identical to their demonstration dropped, M9) and perturbed experts (M3)."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    questions = [t["question"] for t in demos[: cfg.warmup_pool]]
    pool = [(questions[i], response) for rows, batch in sample_answers(
        policy, tokenizer, questions, 4, cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        for i, response in zip(rows, batch.texts(tokenizer))]
    own_samples, _ = negatives(demos, pool, 0, rng)
    for step in run.progress(range(cfg.disc_warmup), "discriminator warm-up"):
        experts = rng.sample(demos, cfg.disc_batch)
        _, perturbed = negatives(experts, [], cfg.perturbed_per_expert, rng)
        stats = discriminator_step(reward_model, optimizer, policy, tokenizer, experts,
                                   rng.sample(own_samples, min(len(own_samples), cfg.disc_batch)), perturbed,
                                   cfg.form, cfg.label_smoothing)
        run.log({"warmup_step": step + 1, **stats})

"""Mixed precision and gradient accumulation (docs/gpu.md), checked on the CPU, where autocast to bf16 works too.

- `bf16-mixed` keeps fp32 weights and AdamW states and runs the forward passes in bf16 (models.autocast): at the
  GPU preset's learning rate one step moves every weight, where bf16 weights keep ~98 % of theirs, and a few
  steps follow the fp32 run.
- A PPO minibatch, an SFT batch and a discriminator batch split into micro-batches give the one-shot gradient
  and the one-shot diagnostics.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from minirl.airl import class_weights, discriminator_batch, discriminator_loss, discriminator_step, expert_nll
from minirl.config import from_preset
from minirl.data import synthetic_tasks
from minirl.logprobs import lm_forward, token_logprobs
from minirl.models import RewardModel, autocast, build_tiny_lm
from minirl.ppo import Rollout, ppo_update, whiten
from minirl.rollout import encode, sample
from minirl.sft import sft_loss, sft_step

LR = from_preset("gsm8k-qwen0.5b").lr  # 1e-6
TASKS = synthetic_tasks(0, n_demos=12, n_corpus=20, n_test=4)["demos"]
PROMPTS = ["Question: Mo?\nAnswer: ", "Question: Ava has 4 pens. How many?\nAnswer: ",
           "Question: Ben has 12 books. Cara has half as many books as Ben. How many books?\nAnswer: "]


def sft_batch(tok, n: int = 6):
    return encode(tok, [f"Question: {t['question']}\nAnswer: " for t in TASKS[:n]], [t["answer"] for t in TASKS[:n]])


def params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


# ---------------------------------------------------------------- mixed precision


def test_autocast_follows_the_precision_and_keeps_the_outputs_fp32(tok, lm) -> None:
    for precision, mixed in (("auto", False), ("fp32", False), ("bf16-mixed", True)):  # auto: fp32 on a CPU
        with autocast(precision, "cpu"):
            assert torch.is_autocast_enabled("cpu") == mixed
    batch = sft_batch(tok, 2)
    with autocast("bf16-mixed", "cpu"), torch.no_grad():
        assert lm(input_ids=batch.input_ids).logits.dtype == torch.bfloat16  # the matmuls did run in bf16
        logp, _, values = lm_forward(lm, batch.input_ids, batch.attention_mask, value_head=nn.Linear(64, 1))
        rewards = RewardModel(lm, "scalar")(batch.input_ids, batch.attention_mask)
    assert logp.dtype == values.dtype == rewards.dtype == torch.float32  # advantages are computed in fp32
    with torch.no_grad():
        exact = token_logprobs(lm, batch.input_ids, batch.attention_mask)
    mask = batch.response_mask.bool()
    assert 0 < (logp - exact)[mask].abs().max() < 0.05  # bf16 rounding: visible, small


def ppo_step(lm: nn.Module, tok, precision: str, lr: float) -> None:
    """One AdamW step of ppo_update (one minibatch) on 3 sampled rows with random advantages."""
    torch.manual_seed(0)
    with torch.no_grad():
        batch = sample(lm.float().eval(), tok, PROMPTS, max_new_tokens=10)
        old_logp = token_logprobs(lm, batch.input_ids, batch.attention_mask)
    lm.to(torch.bfloat16 if precision == "bf16 weights" else torch.float32)
    adv = whiten(torch.randn(old_logp.shape), batch.response_mask.float())
    optimizer = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0)  # as train.make_optimizers
    ppo_update(lm.train(), None, optimizer, Rollout(batch, old_logp, adv), epochs=1, minibatch_size=3,
               precision="fp32" if precision == "bf16 weights" else precision)


def test_one_step_at_the_gpu_presets_lr_moves_every_master_weight_but_few_bf16_weights(tok, eos_lm) -> None:
    # AdamW's first step moves each weight by about lr = 1e-6. bf16 keeps 8 significant bits: a weight of size
    # ~0.02 (the init's std) sits on a grid of spacing 2^-13 = 1.2e-4, and round-to-nearest drops a change below
    # half the spacing, so only weights smaller than 2^-11 = 4.9e-4 move (2 % of N(0, 0.02)); the norms' weights
    # of 1 never do. fp32 master weights (spacing ~2e-9 at 0.02) all move.
    changed = {}
    for precision in ("bf16-mixed", "bf16 weights"):
        lm = copy.deepcopy(eos_lm)
        before = params(lm.to(torch.bfloat16) if precision == "bf16 weights" else lm)
        ppo_step(lm, tok, precision, LR)
        changed[precision] = (params(lm) != before).float().mean().item()
    assert changed["bf16-mixed"] > 0.99  # measured 1.000 (micro model, 3 rows)
    assert changed["bf16 weights"] < 0.05  # measured 0.023: 98 % of the update is lost to rounding


def test_a_few_mixed_steps_track_the_fp32_run(tok) -> None:
    """4 SFT steps at lr 1e-6 from the same start, fp32 vs bf16-mixed (and bf16 weights, the negative control).
    Tolerances, and why:
    - the loss at each step within 2^-9 (bf16's unit roundoff) relative: one bf16 rounding changes a number by
      at most that fraction, and the loss is an average of many rounded terms whose errors mostly cancel
      (measured 1.4e-5 relative), so only a loss computed on other weights or another graph could exceed it;
    - the update theta_4 - theta_0 at cosine > 0.98 to fp32's and its norm within 2 %: AdamW's first steps are
      ~lr x sign(g) per weight, so the update differs only where bf16 noise flips the sign of a gradient that
      is nearly 0; cosine 1 - 2f for a fraction f flipped, so 0.98 allows 1 % of the weights to step the other
      way (measured 0.998, f ~ 0.1 %), and the norm barely moves because |lr x sign(g)| does not depend on g.
      bf16 weights fail it by far (measured cosine ~0: what moves is rounding jumps of 1e-4, not the update)."""
    batch = sft_batch(tok)
    start = build_tiny_lm(tok, "micro", seed=0).train()
    runs = {}
    for name, precision, dtype in (("fp32", "fp32", torch.float32), ("mixed", "bf16-mixed", torch.float32),
                                   ("bf16 weights", "fp32", torch.bfloat16)):
        lm = copy.deepcopy(start).to(dtype)
        optimizer = torch.optim.AdamW(lm.parameters(), lr=LR, weight_decay=0.0)
        losses = [sft_step(lm, optimizer, batch, precision=precision)[0] for _ in range(4)]
        runs[name] = (losses, params(lm) - params(start))
    (fp32_losses, fp32_update), (mixed_losses, mixed_update) = runs["fp32"], runs["mixed"]
    assert mixed_losses == pytest.approx(fp32_losses, rel=2**-9) and mixed_losses != fp32_losses  # bf16 did run
    assert fp32_losses[-1] < fp32_losses[0]  # the steps did train
    cosine = nn.functional.cosine_similarity(mixed_update, fp32_update, dim=0).item()
    assert cosine > 0.98 and mixed_update.norm() / fp32_update.norm() == pytest.approx(1.0, abs=0.02)
    assert nn.functional.cosine_similarity(runs["bf16 weights"][1], fp32_update, dim=0).item() < 0.5


# ---------------------------------------------------------------- gradient accumulation


@pytest.mark.parametrize("micro_batch_size", [1, 2, 4])
def test_ppo_accumulated_minibatch_equals_the_one_shot_minibatch(tok, eos_lm, micro_batch_size: int) -> None:
    # 5 rows of different lengths, minibatches of 5 (chunks of 1, 2+2+1, 4+1), 2 epochs so that the second
    # epoch's ratios differ from 1; SGD without clipping, so a wrongly weighted chunk shows in the weights
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS + PROMPTS[:2], max_new_tokens=12)
    value_head = nn.Linear(64, 1)
    with torch.no_grad():
        old_logp, _, old_values = lm_forward(eos_lm, batch.input_ids, batch.attention_mask, 1.0, value_head)
    mask = batch.response_mask.float()
    assert len(set(mask.sum(1).tolist())) > 1  # the chunks hold different numbers of tokens
    rollout = Rollout(batch, old_logp, whiten(torch.randn(mask.shape), mask), torch.randn(mask.shape) * mask,
                      old_values)
    results = []
    for size in (0, micro_batch_size):
        lm, head = copy.deepcopy(eos_lm).train(), copy.deepcopy(value_head)
        optimizer = torch.optim.SGD(list(lm.parameters()) + list(head.parameters()), lr=0.05)
        torch.manual_seed(1)  # the same minibatch order
        stats = ppo_update(lm, head, optimizer, rollout, epochs=2, minibatch_size=5, max_grad_norm=1e9,
                           micro_batch_size=size)
        results.append((stats, params(lm)))
    (one_shot, want), (accumulated, got) = results
    assert one_shot["approx_kl"] > 0 and one_shot["value_loss"] > 0  # the second epoch moved the policy
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert accumulated == pytest.approx(one_shot, rel=1e-5, abs=1e-7)  # approx_kl, clip_frac, entropy, ...


@pytest.mark.parametrize("micro_batch_size", [1, 4])
def test_sft_accumulated_step_equals_the_one_shot_step(tok, lm, micro_batch_size: int) -> None:
    batch = sft_batch(tok)
    results = []
    for size in (0, micro_batch_size):
        model = copy.deepcopy(lm).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        loss, _ = sft_step(model, optimizer, batch, micro_batch_size=size)
        results.append((loss, params(model), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (loss, want, grad), (acc_loss, got, acc_grad) = results
    assert acc_loss == pytest.approx(loss, rel=1e-6) == sft_loss(lm, batch).item()
    torch.testing.assert_close(acc_grad, grad, atol=1e-7, rtol=1e-5)  # clipped to norm 1 by both
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-5)


def test_class_weights_make_the_loss_a_sum_over_rows() -> None:
    # 1 expert and 3 negatives: the expert weighs 1/2, each negative 1/6; one class alone: 1/n each
    assert class_weights(torch.tensor([True, False, False, False])).tolist() == pytest.approx([1 / 2] + [1 / 6] * 3)
    assert class_weights(torch.tensor([False, False])).tolist() == pytest.approx([1 / 2, 1 / 2])
    logits, mask = torch.randn(4, 3), torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    is_expert = torch.tensor([True, False, True, False])
    whole = discriminator_loss(logits, mask, is_expert)
    weights = class_weights(is_expert)
    parts = sum(discriminator_loss(logits[r], mask[r], is_expert[r], weights=weights[r]) for r in ([0, 1], [2, 3]))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


@pytest.mark.parametrize(("head", "form", "micro_batch_size"), [("token", "airl", 1), ("token", "airl", 3),
                                                                ("scalar", "logit", 2)])
def test_discriminator_accumulated_step_equals_the_one_shot_step(tok, lm, head, form, micro_batch_size) -> None:
    # 3 experts, 2 policy samples and 2 perturbed experts: classes of 3 and 4 rows, so chunks of 1 or 3 cut
    # across both classes and a class's rows land in different chunks
    experts = [{"question": t["question"], "answer": t["answer"]} for t in TASKS[:3]]
    policy_samples = [(t["question"], t["answer"].replace("1", "2")) for t in TASKS[3:5]]
    perturbed = [(t["question"], t["answer"] + "\n#### 0", t["answer"]) for t in TASKS[5:7]]
    results = []
    for size in (0, micro_batch_size):
        torch.manual_seed(0)
        reward_model = RewardModel(build_tiny_lm(tok, "micro", seed=1), head)
        if head == "scalar":
            nn.init.normal_(reward_model.head.weight, std=0.1)  # not 0, so the backbone gets a gradient
        optimizer = torch.optim.SGD(reward_model.parameters(), lr=0.05)
        stats = discriminator_step(reward_model, optimizer, lm, tok, experts, policy_samples, perturbed, form,
                                   max_grad_norm=1e9, micro_batch_size=size)
        results.append((stats, params(reward_model)))
    (one_shot, want), (accumulated, got) = results
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert accumulated == pytest.approx(one_shot, rel=1e-5, abs=1e-7)  # loss, grad norm, accuracies, mean logits


def test_the_expert_nll_anchor_adds_its_weight_times_the_nll_gradient(tok, lm) -> None:
    # the same step with weight 0 and with weight w: the parameters differ by -lr * w * grad(expert NLL under f)
    experts = [{"question": t["question"], "answer": t["answer"]} for t in TASKS[:3]]
    policy_samples = [(t["question"], t["answer"].replace("1", "2")) for t in TASKS[3:5]]
    perturbed = [(t["question"], t["answer"] + "\n#### 0", t["answer"]) for t in TASKS[5:7]]
    lr, weight, after, logged = 0.05, 0.7, [], []
    for w in (0.0, weight):
        torch.manual_seed(0)
        reward_model = RewardModel(build_tiny_lm(tok, "micro", seed=1), "token")
        start = copy.deepcopy(reward_model)
        stats = discriminator_step(reward_model, torch.optim.SGD(reward_model.parameters(), lr=lr), lm, tok,
                                   experts, policy_samples, perturbed, "airl", max_grad_norm=1e9, micro_batch_size=2,
                                   nll_weight=w)
        after.append(params(reward_model))
        logged.append(stats.get("disc_expert_nll"))
    batch, source, labelled = discriminator_batch(tok, experts, policy_samples, perturbed, "after", 0.5)
    is_expert = torch.tensor([s == "expert" for s in source])
    nll = expert_nll(start(batch.input_ids, batch.attention_mask), labelled, is_expert, 3)
    nll.backward()
    want = torch.cat([-lr * weight * (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in start.parameters()])
    torch.testing.assert_close(after[1] - after[0], want, atol=1e-6, rtol=1e-4)
    assert logged[0] is None and logged[1] == pytest.approx(nll.item(), rel=1e-5)  # logged apart from disc_loss

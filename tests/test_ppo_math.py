"""Tests for minirl.ppo and minirl.rollout (M4): EOS masks, batch layout, advantages, losses, sampling, update."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from minirl.config import from_preset
from minirl.logprobs import lm_forward, lm_forward_shared_prompts, token_logprobs
from minirl.models import build_tokenizer
from minirl.ppo import (
    Rollout,
    gae_advantages,
    group_advantages,
    masked_mean,
    outcome_advantages,
    ppo_loss,
    ppo_update,
    value_loss,
    whiten,
)
from minirl.rollout import Batch, encode, first_eos_mask, make_batch, sample
from minirl.train import estimate_advantages

# prompts of three different token lengths
PROMPTS = ["Question: Mo?\nAnswer: ",
           "Question: Ava has 4 pens. How many?\nAnswer: ",
           "Question: Ben has 12 books. Cara has half as many books as Ben. How many books?\nAnswer: "]


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def assert_rows(x: torch.Tensor, rows, atol: float = 1e-6) -> None:
    torch.testing.assert_close(x, t(rows), atol=atol, rtol=1e-5)


# ---------------------------------------------------------------- EOS masks and batch layout


def test_first_eos_mask_hand_cases() -> None:
    # is_eos [0,1,0,1,1]; EOS counted strictly before each position: [0,0,1,1,2] -> == 0 -> [1,1,0,0,0]
    assert first_eos_mask(torch.tensor([[5, 2, 7, 2, 2]]), 2).tolist() == [[1, 1, 0, 0, 0]]
    assert first_eos_mask(torch.tensor([[5, 6, 7]]), 2).tolist() == [[1, 1, 1]]  # no EOS: all kept
    assert first_eos_mask(torch.tensor([[2, 5, 6, 7]]), 2).tolist() == [[1, 0, 0, 0]]  # EOS first
    rows = torch.tensor([[9, 9, 2, 2, 2], [9, 2, 9, 9, 9], [9, 9, 9, 9, 9]])
    assert first_eos_mask(rows, 2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_first_eos_mask_pad_equal_to_eos_keeps_the_real_eos() -> None:
    # pad id == eos id == 0: the padding after the EOS is more "EOS", yet the first one stays in the mask
    eos = pad = 0
    tokens = torch.tensor([[7, 8, eos, pad, pad], [7, eos, pad, pad, pad]])
    assert first_eos_mask(tokens, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]


def test_make_batch_layout() -> None:
    b = make_batch([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
    # P = 2, R = 2: prompts left-padded to 2, responses right-padded to 2
    assert b.prompt_len == 2
    assert b.input_ids.tolist() == [[1, 2, 4, 0], [0, 3, 5, 6]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 0], [0, 1, 1, 1]]
    assert b.response_mask.tolist() == [[0, 0, 1, 0], [0, 0, 1, 1]]
    sub = b.select([1])
    assert sub.input_ids.tolist() == [[0, 3, 5, 6]] and sub.prompt_len == 2


def test_encode_appends_eos_and_texts_drop_it(tok) -> None:
    b = encode(tok, ["Question: q\nAnswer: "], ["#### 12"])
    resp = b.input_ids[0][b.response_mask[0].bool()].tolist()
    assert resp == tok("#### 12", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert b.texts(tok) == ["#### 12"]
    empty = encode(tok, ["Question: q\nAnswer: ", "Question: longer one\nAnswer: "])
    assert empty.response_mask.sum().item() == 0 and empty.input_ids.shape[1] == empty.prompt_len


# ---------------------------------------------------------------- masked mean and whitening


def test_masked_mean() -> None:
    assert masked_mean(t([1.0, 2.0, 3.0]), t([1, 0, 1])).item() == pytest.approx(2.0)  # (1 + 3) / 2
    assert masked_mean(t([1.0, 2.0]), t([0, 0])).item() == 0.0  # empty mask: 0, not nan


def test_whiten_hand_case_and_masking() -> None:
    # masked entries 1 and 3: mean 2, population std 1 -> -1 and +1; masked-out entries -> 0
    x, mask = t([[1.0, 100.0, 3.0]]), t([[1, 0, 1]])
    assert_rows(whiten(x, mask), [[-1.0, 0.0, 1.0]])


def test_whiten_moments() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 9) * 3 + 5
    mask = (torch.rand(4, 9) > 0.4).float()
    w = whiten(x, mask)
    sel = w[mask.bool()]
    assert sel.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert (sel**2).mean().sqrt().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(w[~mask.bool()] == 0)


# ---------------------------------------------------------------- GAE


def test_gae_hand_case() -> None:
    # layout: 2 prompt columns, 3 response tokens, 0 padding
    rewards = t([[0.0, 0.0, 0.0, 1.0, 2.0]])
    values = t([[0.0, 0.0, 0.5, 1.0, 1.5]])
    mask = t([[0, 0, 1, 1, 1]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    # delta_2 = 2 + 0 - 1.5 = 0.5 (V after the last token is 0)
    # delta_1 = 1 + 1.5 - 1.0 = 1.5;  delta_0 = 0 + 1.0 - 0.5 = 0.5
    # A_2 = 0.5;  A_1 = 1.5 + 0.5 * 0.5 = 1.75;  A_0 = 0.5 + 0.5 * 1.75 = 1.375
    assert_rows(adv, [[0.0, 0.0, 1.375, 1.75, 0.5]])
    # returns = A + V: 1.875, 2.75, 2.0
    assert_rows(ret, [[0.0, 0.0, 1.875, 2.75, 2.0]])


def test_gae_discount() -> None:
    # one-token-per-step check of gamma: r = [0, 1], V = [0, 0], gamma 0.5, lam 1
    # A_1 = 1;  A_0 = 0 + 0.5 * 0 - 0 + 0.5 * 1 * 1 = 0.5
    adv, _ = gae_advantages(t([[0.0, 1.0]]), t([[0.0, 0.0]]), t([[1, 1]]), gamma=0.5, lam=1.0)
    assert_rows(adv, [[0.5, 1.0]])


def test_gae_masked_positions_do_not_leak() -> None:
    # the hand case above with non-zero rewards/values on the prompt and on padding after the EOS
    rewards = t([[7.0, -3.0, 0.0, 1.0, 2.0, 9.0, 4.0]])
    values = t([[5.0, 6.0, 0.5, 1.0, 1.5, 8.0, -2.0]])
    mask = t([[0, 0, 1, 1, 1, 0, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    assert_rows(adv, [[0.0, 0.0, 1.375, 1.75, 0.5, 0.0, 0.0]])
    assert_rows(ret, [[0.0, 0.0, 1.875, 2.75, 2.0, 0.0, 0.0]])


# ---------------------------------------------------------------- group advantages (critic-free)

D = math.sqrt(0.5) + 1e-4  # scores (mean token rewards) [1, 0]: mu = 0.5, sd (ddof 1) = sqrt(0.5); divisor sd + 1e-4


def _group_case():
    # one group of 2: row 0 rewards [1, 1] (2 tokens), row 1 [0, 0, 0, 0] (4 tokens)
    rewards = t([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = t([[1, 1, 0, 0], [1, 1, 1, 1]])
    return rewards, mask


def test_group_advantages_gamma_one() -> None:
    rewards, mask = _group_case()
    adv = group_advantages(rewards, mask, group_size=2, gamma=1.0)
    # normed row 0 = (1 - 0.5)/D each, row 1 = (0 - 0.5)/D each; reward-to-go with gamma 1
    assert adv[0].tolist() == pytest.approx([1.0 / D, 0.5 / D, 0.0, 0.0], rel=1e-5)
    assert adv[1].tolist() == pytest.approx([-2.0 / D, -1.5 / D, -1.0 / D, -0.5 / D], rel=1e-5)


def test_group_advantages_gamma_point_nine() -> None:
    rewards, mask = _group_case()
    adv = group_advantages(rewards, mask, group_size=2, gamma=0.9)
    # row 0: A_1 = 0.5/D;  A_0 = 0.5/D + 0.9 * 0.5/D = 0.95/D
    assert adv[0].tolist() == pytest.approx([0.95 / D, 0.5 / D, 0.0, 0.0], rel=1e-5)
    # row 1: -0.5, -0.5 - 0.9*0.5 = -0.95, -0.5 - 0.9*0.95 = -1.355, -0.5 - 0.9*1.355 = -1.7195 (all /D)
    assert adv[1].tolist() == pytest.approx([-1.7195 / D, -1.355 / D, -0.95 / D, -0.5 / D], rel=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_group_advantages_same_constant_reward_is_zero_whatever_the_length(gamma: float) -> None:
    # issue 13: the old estimator (trace reward = sum) gave lengths 3 and 4 advantages of -0.71 and +0.71
    rewards = t([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    mask = t([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert torch.equal(group_advantages(rewards, mask, 2, gamma), torch.zeros(2, 4))
    # and the same reward paid once at the last token, lengths 3 and 4 (scores 1/3, 1/4: not a tie) is not
    # what the dense estimator is for: the outcome estimator gives both exactly 0
    last = t([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert torch.equal(outcome_advantages(t([1.0, 1.0]), mask, 2), torch.zeros(2, 4))
    assert group_advantages(last, mask, 2, gamma).abs().max() > 0  # the documented length effect


def test_group_advantages_near_tie_is_near_zero() -> None:
    # constant per-token rewards 2 and 2.0000028: sd = 2e-6, (r - mu) = -+1.4e-6, divided by sd + 1e-4
    rewards = t([[2.0, 2.0, 2.0], [2.0000028, 2.0000028, 2.0000028]])
    adv = group_advantages(rewards, torch.ones(2, 3), 2, 1.0)
    assert adv.abs().max().item() < 0.05


def test_group_advantages_leave_one_out_hand_values() -> None:
    # group of 3, 2 tokens each: scores [1, 0, 2]; others' means [1, 1.5, 0.5]
    rewards = t([[1.0, 1.0], [0.0, 0.0], [1.0, 3.0]])
    adv = group_advantages(rewards, torch.ones(3, 2), 3, gamma=1.0, baseline="loo")
    # normed: row 0 [0, 0]; row 1 [-1.5, -1.5]; row 2 [0.5, 2.5]; reward-to-go
    assert_rows(adv, [[0.0, 0.0], [-3.0, -1.5], [3.0, 2.5]], atol=1e-6)


def test_outcome_advantages_hand_values() -> None:
    # one group of 4: R = [1, 0, 0, 1]: mu = 0.5, sd (ddof 0) = 0.5 -> A = +-1 / (1 + 2e-4) on every response token
    mask = t([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    adv = outcome_advantages(t([1.0, 0.0, 0.0, 1.0]), mask, 4)
    a = 0.5 / (0.5 + 1e-4)
    assert_rows(adv, [[a, a, 0], [-a, -a, -a], [-a, 0, 0], [a, a, a]], atol=1e-6)


def test_group_advantages_ignore_masked_rewards_and_separate_groups() -> None:
    rewards, mask = _group_case()
    want = group_advantages(rewards, mask, group_size=2, gamma=1.0)
    noisy = rewards.clone()
    noisy[0, 2:] = torch.tensor([5.0, -7.0])  # padding after row 0's EOS
    prompt_col = torch.zeros(2, 1)  # a prompt column in front, with a reward that must not count
    got = group_advantages(torch.cat([prompt_col + 3.0, noisy], 1), torch.cat([prompt_col, mask], 1), 2, 1.0)
    assert torch.allclose(got[:, 1:], want, rtol=1e-5) and torch.all(got[:, 0] == 0)
    # two groups side by side are normalised separately: the second group is the first scaled by 10,
    # so its normalised rewards (and advantages) are the same up to the 1e-4 in the divisor (relative 1.3e-4)
    both = group_advantages(torch.cat([rewards, 10 * rewards]), torch.cat([mask, mask]), 2, 1.0)
    assert torch.allclose(both[:2], want, rtol=1e-5) and torch.allclose(both[2:], want, rtol=2e-4)


def test_group_advantages_group_of_one_is_not_scaled() -> None:
    # G = 1: sd := 1, mu = R itself: normed = r - R/T = [1 - 1.5, 2 - 1.5] = [-0.5, 0.5]; A = [0, 0.5]
    adv = group_advantages(t([[1.0, 2.0]]), t([[1, 1]]), group_size=1, gamma=1.0)
    assert_rows(adv, [[0.0, 0.5]], atol=1e-5)


def test_group_advantages_tied_group_stays_bounded() -> None:
    # outcome reward: both samples right, reward 1 at the last of 3 tokens; R = [1, 1], mu = 1, sd = 0.
    # (R - mu) = 0 for both: the group carries no preference, so no token should get a huge advantage
    # (today: normed = [-1/3, -1/3, 2/3] / 1e-6 -> A = [0, 3.3e5, 6.7e5])
    rewards = t([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    adv = group_advantages(rewards, torch.ones(2, 3), group_size=2, gamma=1.0)
    assert adv.abs().max().item() <= 10.0


# ---------------------------------------------------------------- PPO losses


def test_ppo_loss_ratio_one() -> None:
    logp = t([[-1.0, -2.0, -0.5]])
    adv, mask = t([[1.0, 2.0, 100.0]]), t([[1, 1, 0]])
    loss, stats = ppo_loss(logp, logp.clone(), adv, mask, clip=0.2)
    assert loss.item() == pytest.approx(-1.5)  # -mean(A) over the mask = -(1 + 2) / 2
    assert stats == pytest.approx({"approx_kl": 0.0, "clip_frac": 0.0, "ratio": 1.0})


def test_ppo_loss_clipping_hand_cases() -> None:
    old = t([[0.0, 0.0, 0.0, 0.0]])
    logp = t([[math.log(1.5), math.log(1.5), math.log(0.5), math.log(0.5)]]).requires_grad_()
    adv = t([[1.0, -1.0, 1.0, -1.0]])
    loss, stats = ppo_loss(logp, old, adv, torch.ones(1, 4), clip=0.2)
    # surrogate = max(-A rho, -A clip(rho, 0.8, 1.2)):
    #   A=+1, rho 1.5: max(-1.5, -1.2) = -1.2 (clipped)     A=-1, rho 1.5: max(1.5, 1.2) = 1.5 (not clipped)
    #   A=+1, rho 0.5: max(-0.5, -0.8) = -0.5 (not clipped) A=-1, rho 0.5: max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    assert stats["clip_frac"] == 1.0  # |rho - 1| = 0.5 > 0.2 everywhere
    # k3: rho - 1 - log rho: (0.5 - log 1.5) twice and (-0.5 - log 0.5) twice
    assert stats["approx_kl"] == pytest.approx((2 * (0.5 - math.log(1.5)) + 2 * (-0.5 - math.log(0.5))) / 4)
    assert stats["ratio"] == pytest.approx(1.0)  # (1.5 + 1.5 + 0.5 + 0.5) / 4
    loss.backward()
    # d/dlogp of -A rho / 4 = -A rho / 4 where unclipped; 0 where the clipped branch is taken
    assert_rows(logp.grad, [[0.0, 1.5 / 4, -0.5 / 4, 0.0]])


def test_ppo_loss_single_clipped_token() -> None:
    loss, _ = ppo_loss(t([[math.log(1.5)]]), t([[0.0]]), t([[1.0]]), t([[1]]), clip=0.2)
    assert loss.item() == pytest.approx(-1.2)  # -min(1.5 * 1, 1.2 * 1)


def test_value_loss_hand_case() -> None:
    values, old, returns = t([[1.0, 0.6, 9.0]]), t([[0.5, 0.5, 0.0]]), t([[2.0, 0.0, 0.0]])
    mask = t([[1, 1, 0]])
    # token 0: clipped V = 0.5 + clip(0.5, -0.2, 0.2) = 0.7; max((1-2)^2, (0.7-2)^2) = max(1, 1.69) = 1.69
    # token 1: |0.6 - 0.5| < 0.2, clipped V = 0.6; max(0.36, 0.36) = 0.36;  token 2 masked out
    # 0.5 * (1.69 + 0.36) / 2 = 0.5125
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.5125)


# ---------------------------------------------------------------- sampling


def _response(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    return batch.input_ids[:, batch.prompt_len:], batch.response_mask[:, batch.prompt_len:]


def _check_sample_layout(batch: Batch, tok, prompts: list[str], max_new_tokens: int) -> list[int]:
    """Shapes, prompt part and EOS masks of a sampled batch; returns each row's response length."""
    enc = encode(tok, prompts)
    B, P = len(prompts), enc.prompt_len
    assert batch.prompt_len == P
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.response_mask.shape
    assert batch.input_ids.shape[0] == B and P < batch.input_ids.shape[1] <= P + max_new_tokens
    assert torch.equal(batch.input_ids[:, :P], enc.input_ids)  # the left-padded prompts, unchanged
    assert torch.equal(batch.attention_mask[:, :P], enc.attention_mask)
    assert torch.all(batch.response_mask[:, :P] == 0)
    tokens, rmask = _response(batch)
    assert torch.equal(batch.attention_mask[:, P:], rmask)
    lengths = []
    for row, m in zip(tokens.tolist(), rmask.tolist(), strict=True):
        if tok.eos_token_id in row:
            k = row.index(tok.eos_token_id)  # 1 up to and including the first EOS, pad after it
            assert m == [1] * (k + 1) + [0] * (len(row) - k - 1)
            assert row[k + 1:] == [tok.pad_token_id] * (len(row) - k - 1)
            lengths.append(k + 1)
        else:
            assert m == [1] * len(row) and len(row) == max_new_tokens
            lengths.append(len(row))
    return lengths


def test_sample_layout_and_eos(tok, eos_lm) -> None:
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    lengths = _check_sample_layout(batch, tok, PROMPTS, 12)
    assert len(set(encode(tok, PROMPTS).attention_mask.sum(1).tolist())) == 3  # three prompt lengths
    assert len(set(lengths)) >= 2 and min(lengths) < batch.input_ids.shape[1] - batch.prompt_len  # padded rows
    torch.manual_seed(0)
    again = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    assert torch.equal(again.input_ids, batch.input_ids)  # seeded sampling is reproducible


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_n_samples_share_one_prefill_and_match_repeated_prompts(tok, eos_lm, temperature: float) -> None:
    """sample(prompts, n=3) fills the KV cache once per prompt and copies it to its 3 samples: the same rows, token
    for token, as sampling each prompt written out 3 times (seeded), and the same layout."""
    repeated = [p for p in PROMPTS for _ in range(3)]
    torch.manual_seed(0)
    written_out = sample(eos_lm, tok, repeated, max_new_tokens=12, temperature=temperature)
    torch.manual_seed(0)
    shared = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=temperature, n=3)
    _check_sample_layout(shared, tok, repeated, 12)
    for a, b in zip((written_out.input_ids, written_out.attention_mask, written_out.response_mask),
                    (shared.input_ids, shared.attention_mask, shared.response_mask)):
        assert torch.equal(a, b)


def test_sample_with_pad_equal_to_eos(corpus_texts, make_eos_lm) -> None:
    tok = build_tokenizer(corpus_texts, vocab_size=300)
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    lm = make_eos_lm(tok)
    torch.manual_seed(0)
    batch = sample(lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    lengths = _check_sample_layout(batch, tok, PROMPTS, 12)
    tokens, rmask = _response(batch)
    R = tokens.shape[1]
    assert min(lengths) < R  # some row has padding (= EOS ids) after its EOS
    for row, n in zip(tokens, lengths, strict=True):  # the EOS itself is kept: the mask's last 1 sits on an EOS
        if n < R:
            assert row[n - 1].item() == tok.eos_token_id and torch.all(row[n:] == tok.eos_token_id)
    assert rmask.sum(1).tolist() == lengths


def test_greedy_sampling_is_deterministic(tok, lm) -> None:
    a = sample(lm, tok, PROMPTS, max_new_tokens=8, temperature=0)
    b = sample(lm, tok, PROMPTS, max_new_tokens=8, temperature=0)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.response_mask, b.response_mask)
    _check_sample_layout(a, tok, PROMPTS, 8)
    with torch.no_grad():  # each greedy token is the argmax of a full forward pass over the batch
        logits = lm(input_ids=a.input_ids, attention_mask=a.attention_mask,
                    position_ids=(a.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
    P = a.prompt_len
    assert torch.equal(a.input_ids[:, P:], logits[:, P - 1:-1].argmax(-1))


class LogitRecorder(nn.Module):
    """Wraps an LM and keeps the last-position logits of every call (one call per sampled token)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm, self.steps = lm, []

    def forward(self, **kwargs):
        out = self.lm(**kwargs)
        self.steps.append(out.logits[:, -1].float())
        return out


def test_kv_cache_sampling_agrees_with_a_full_forward(tok, eos_lm) -> None:
    # the distribution each token was sampled from (KV cache, left padding, stepping positions) equals the
    # one token_logprobs sees in a single pass over the finished batch, on every real response token
    rec = LogitRecorder(eos_lm)
    torch.manual_seed(0)
    batch = sample(rec, tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    with torch.no_grad():
        logp = token_logprobs(eos_lm, batch.input_ids, batch.attention_mask)
    P, R = batch.prompt_len, batch.input_ids.shape[1] - batch.prompt_len
    assert len(rec.steps) == R
    checked = 0
    for j, step_logits in enumerate(rec.steps):
        step_logp = torch.log_softmax(step_logits, -1)  # [B, V]
        for i in range(len(PROMPTS)):
            if batch.response_mask[i, P + j]:
                want = step_logp[i, batch.input_ids[i, P + j]]
                assert logp[i, P + j].item() == pytest.approx(want.item(), abs=1e-5)
                checked += 1
    assert checked == batch.response_mask.sum().item() > 10


# ---------------------------------------------------------------- the update


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_ppo_update_first_ratio_is_one(tok, eos_lm, temperature: float) -> None:
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=temperature)
    with torch.no_grad():
        old_logp = token_logprobs(eos_lm, batch.input_ids, batch.attention_mask, temperature)
    mask = batch.response_mask.float()
    assert torch.all(old_logp[mask.bool()] < 0) and torch.all(torch.isfinite(old_logp))
    adv = whiten(torch.randn(old_logp.shape), mask)
    before = eos_lm.model.embed_tokens.weight.detach().clone()
    optimizer = torch.optim.AdamW(eos_lm.parameters(), lr=1e-3)
    stats = ppo_update(eos_lm.train(), None, optimizer, Rollout(batch, old_logp, adv), epochs=1, minibatch_size=3,
                       temperature=temperature)
    assert stats["ratio_first"] == pytest.approx(1.0, abs=1e-5)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats["clip_frac"] == 0.0
    assert stats["grad_norm"] > 0
    assert not torch.equal(eos_lm.model.embed_tokens.weight, before)  # the step was taken


def test_on_policy_update_without_old_logp_is_the_same_step(tok, make_eos_lm) -> None:
    """One step on the whole rollout with old_logp=None (the step's own log-probs stand in, train.on_policy_update)
    moves the weights exactly as with the scoring pass's old_logp; with two minibatches it is refused."""
    torch.manual_seed(0)
    lms = [make_eos_lm(tok), make_eos_lm(tok)]
    batch = sample(lms[0], tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    with torch.no_grad():
        old_logp = token_logprobs(lms[0], batch.input_ids, batch.attention_mask)
    adv = whiten(torch.randn(old_logp.shape), batch.response_mask.float())
    for lm, old in zip(lms, (old_logp, None)):
        optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3)
        stats = ppo_update(lm.train(), None, optimizer, Rollout(batch, old, adv), epochs=1, minibatch_size=len(PROMPTS))
        assert stats["ratio_first"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(lms[0].parameters(), lms[1].parameters()))
    with pytest.raises(ValueError, match="one optimiser step"):
        ppo_update(lms[1], None, optimizer, Rollout(batch, None, adv), epochs=1, minibatch_size=len(PROMPTS) - 1)


def test_ppo_update_ratio_detects_a_temperature_mismatch(tok, eos_lm) -> None:
    # the negative control of the check above: old log-probs at T = 0.7, training at T = 1
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=0.7)
    with torch.no_grad():
        old_logp = token_logprobs(eos_lm, batch.input_ids, batch.attention_mask, 0.7)
    adv = whiten(torch.randn(old_logp.shape), batch.response_mask.float())
    optimizer = torch.optim.SGD(eos_lm.parameters(), lr=0.0)
    stats = ppo_update(eos_lm.train(), None, optimizer, Rollout(batch, old_logp, adv), 1, 3, temperature=1.0)
    assert abs(stats["ratio_first"] - 1.0) > 1e-3


def test_ppo_update_with_value_head(tok, eos_lm) -> None:
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    value_head = nn.Linear(eos_lm.config.hidden_size, 1)
    mask = batch.response_mask.float()
    with torch.no_grad():
        old_logp, _, old_values = lm_forward(eos_lm, batch.input_ids, batch.attention_mask, 1.0, value_head)
    rewards = torch.randn(old_logp.shape)
    adv, returns = gae_advantages(rewards, old_values, mask, gamma=1.0, lam=0.95)
    optimizer = torch.optim.AdamW(list(eos_lm.parameters()) + list(value_head.parameters()), lr=1e-3)
    stats = ppo_update(eos_lm.train(), value_head, optimizer, Rollout(batch, old_logp, whiten(adv, mask), returns,
                                                                      old_values), epochs=2, minibatch_size=2)
    assert stats["ratio_first"] == pytest.approx(1.0, abs=1e-5)
    assert stats["value_loss"] > 0
    sel = mask.bool()
    ret, val = returns[sel], old_values[sel]
    assert stats["explained_var"] == pytest.approx((1 - (ret - val).var() / ret.var()).item(), rel=1e-5)


@pytest.mark.parametrize("target_kl, epochs_done", [(0.0, 4), (1e-9, 1)])
def test_ppo_update_target_kl_stops_after_the_epoch_that_exceeds_it(tok, eos_lm, target_kl, epochs_done) -> None:
    # the first epoch moves the policy (approx-KL > 0 from its second minibatch on), so a tiny target stops after it
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0)
    with torch.no_grad():
        old_logp = token_logprobs(eos_lm, batch.input_ids, batch.attention_mask)
    adv = whiten(torch.randn(old_logp.shape), batch.response_mask.float())
    optimizer = torch.optim.AdamW(eos_lm.parameters(), lr=1e-2)
    stats = ppo_update(eos_lm.train(), None, optimizer, Rollout(batch, old_logp, adv), epochs=4, minibatch_size=2,
                       target_kl=target_kl)
    assert stats["epochs_done"] == epochs_done


def test_shared_prompt_forward_gives_the_same_logprobs_and_gradients(tok, eos_lm) -> None:
    """lm_forward_shared_prompts (each prompt once, its keys and values copied to its n rows) against lm_forward on
    the same rows: log-probs, entropies and gradients equal up to float rounding on response tokens; and a one-step
    PPO update with samples_per_prompt=3 moves the weights as the plain update does."""
    torch.manual_seed(0)
    batch = sample(eos_lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0, n=3)
    mask = batch.response_mask.bool()
    eos_lm.train()
    grads = []
    for shared in (False, True):
        eos_lm.zero_grad()
        if shared:
            logp, entropy, _ = lm_forward_shared_prompts(eos_lm, batch.input_ids, batch.attention_mask,
                                                         batch.prompt_len, 3, 1.0, True)
        else:
            logp, entropy, _ = lm_forward(eos_lm, batch.input_ids, batch.attention_mask, 1.0, None, True)
        logp[mask].sum().backward()
        grads.append(([p.grad.clone() for p in eos_lm.parameters()], logp[mask], entropy[mask]))
    (g_full, logp_full, ent_full), (g_shared, logp_shared, ent_shared) = grads
    assert torch.allclose(logp_full, logp_shared, atol=1e-5) and torch.allclose(ent_full, ent_shared, atol=1e-5)
    assert all((a - b).norm() <= 1e-5 * a.norm() + 1e-8 for a, b in zip(g_full, g_shared))  # rounding only

    adv = whiten(torch.randn(batch.input_ids.shape), batch.response_mask.float())
    weights = []
    for n in (1, 3):
        lm = copy.deepcopy(eos_lm)
        optimizer = torch.optim.SGD(lm.parameters(), lr=0.1)  # AdamW turns rounding noise in ~0 gradients to +-lr
        stats = ppo_update(lm.train(), None, optimizer, Rollout(batch, None, adv), epochs=1,
                           minibatch_size=len(batch.input_ids), samples_per_prompt=n)
        assert stats["ratio_first"] == 1.0
        weights.append([p.detach().clone() for p in lm.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*weights))  # 0.1 x rounding
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], eos_lm.parameters()))  # a step was taken


def test_trace_advantages_pay_each_trace_its_mean_reward_as_one_outcome() -> None:
    cfg = from_preset("tiny", advantage="trace", samples_per_prompt=2)
    # group of 2: trace 0 has rewards [1, 3] (mean 2), trace 1 has [0, 0, 3] (mean 1); padding carries junk
    rewards = t([[1.0, 3.0, 9.0], [0.0, 0.0, 3.0]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    adv, returns = estimate_advantages(cfg, rewards, None, mask)
    # means 2 and 1: mu 1.5, sd (ddof 0) 0.5 -> +1 and -1 (up to the 1e-4 floor), on every response token
    want = t([[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]]) * 0.5 / (0.5 + 1e-4)
    assert returns is None
    assert torch.allclose(adv, want)

"""Tests for minirl.airl (M2, M3): the discriminator loss, its two forms, the policy reward, negatives."""

from __future__ import annotations

import math
import random

import pytest
import torch

from minirl.airl import (
    change_weighted,
    discriminator_batch,
    discriminator_logits,
    discriminator_loss,
    discriminator_stats,
    expert_nll,
    first_change_end,
    first_difference,
    from_the_change,
    last_difference,
    line_end,
    negatives,
    policy_rewards,
)
from minirl.logprobs import token_logprobs
from minirl.models import RewardModel, build_tiny_lm
from minirl.rollout import encode, text_ids

LOG2 = math.log(2.0)


def bce(z: float, y: float) -> float:
    """-(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))), from the definition."""
    s = 1 / (1 + math.exp(-z))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


# ---------------------------------------------------------------- the loss


def test_discriminator_loss_at_zero_logits_is_log2() -> None:
    # BCE at logit 0 is -(y log 1/2 + (1-y) log 1/2) = log 2 whatever the target (0.95 or 0.05)
    logits = torch.zeros(2, 4)
    mask = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 1]])  # response lengths 1 and 2
    loss = discriminator_loss(logits, mask, torch.tensor([True, False]), label_smoothing=0.1)
    assert loss.item() == pytest.approx(LOG2, abs=1e-6)


def test_discriminator_loss_hand_case() -> None:
    big = 50.0  # on prompt / padding positions: must be ignored
    logits = torch.tensor([[big, 2.0, big, big],      # expert, 1 response token
                           [big, 0.5, -1.0, big],     # policy, 2 tokens
                           [big, 3.0, big, big],      # policy, 1 token
                           [big, -2.0, 0.0, 1.0]])    # policy, 3 tokens
    mask = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1]])
    is_expert = torch.tensor([True, False, False, False])
    loss = discriminator_loss(logits, mask, is_expert, label_smoothing=0.1)
    hi, lo = 0.95, 0.05  # targets 1 - 0.1/2 and 0.1/2
    expert = bce(2.0, hi)
    policy = [(bce(0.5, lo) + bce(-1.0, lo)) / 2,  # each sequence divided by its own length
              bce(3.0, lo),
              (bce(-2.0, lo) + bce(0.0, lo) + bce(1.0, lo)) / 3]
    want = 0.5 * expert + 0.5 * sum(policy) / 3  # the two classes weighted equally (1 expert vs 3 policy)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    # a prompt-side logit is masked out: changing it changes nothing
    moved = logits.clone()
    moved[:, 0] = -50.0
    assert discriminator_loss(moved, mask, is_expert, 0.1).item() == pytest.approx(want, rel=1e-6)


def test_discriminator_stats_hand_case() -> None:
    big = 50.0
    logits = torch.tensor([[big, 2.0, big, big],
                           [big, 0.5, -1.0, big],
                           [big, 3.0, big, big],
                           [big, -2.0, 0.0, 1.0],
                           [big, -1.0, -3.0, big]])
    mask = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1], [0, 1, 1, 0]])
    stats = discriminator_stats(logits, mask, ["expert", "policy", "policy", "policy", "perturbed"])
    # mean response logits: expert 2 (> 0: called expert, right); policy -0.25 (right), 3 (wrong), -1/3 (right);
    # perturbed -2 (right)
    assert stats == pytest.approx({
        "disc_acc_expert": 1.0, "disc_logit_expert": 2.0,
        "disc_acc_policy": 2 / 3, "disc_logit_policy": (-0.25 + 3.0 - 1 / 3) / 3,
        "disc_acc_perturbed": 1.0, "disc_logit_perturbed": -2.0,
    })
    only = discriminator_stats(logits[:2], mask[:2], ["expert", "policy"])
    assert set(only) == {"disc_acc_expert", "disc_logit_expert", "disc_acc_policy", "disc_logit_policy"}


def test_expert_nll_by_hand() -> None:
    # two expert rows (one padded) and one negative, whose f must not count
    f = torch.tensor([[-0.5, -1.0, -9.0], [-2.0, -2.0, -3.5], [-7.0, -7.0, -7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    is_expert = torch.tensor([True, True, False])
    want = (0.75 + 2.5) / 2  # each expert trace's mean NLL, averaged over the two experts
    assert expert_nll(f, mask, is_expert, 2).item() == pytest.approx(want)
    chunks = expert_nll(f[:1], mask[:1], is_expert[:1], 2) + expert_nll(f[1:], mask[1:], is_expert[1:], 2)
    assert chunks.item() == pytest.approx(want)  # chunks of a batch add up to the whole (gradient accumulation)
    assert expert_nll(f[2:], mask[2:], is_expert[2:], 0).item() == 0.0  # no experts: nothing to anchor, never NaN


def test_discriminator_loss_without_smoothing() -> None:
    logits = torch.tensor([[1.0], [-0.5]])
    loss = discriminator_loss(logits, torch.ones(2, 1), torch.tensor([True, False]), label_smoothing=0.0)
    # targets 1 and 0: 0.5 * -log sigmoid(1) + 0.5 * -log(1 - sigmoid(-0.5))
    assert loss.item() == pytest.approx(0.5 * bce(1.0, 1.0) + 0.5 * bce(-0.5, 0.0), rel=1e-6)


# ---------------------------------------------------------------- the two forms and the policy's reward

PROMPTS = ["Question: Ava has 4 pens. How many?\nAnswer: ", "Question: Mo?\nAnswer: "]
ANSWERS = ["Ava has 4 pens.\n#### 4", "#### 12"]


def test_discriminator_logits_forms(tok, lm) -> None:
    batch = encode(tok, PROMPTS, ANSWERS)
    rm = RewardModel(build_tiny_lm(tok, "micro", seed=1).eval(), head="token")
    with torch.no_grad():
        f = token_logprobs(rm.lm, batch.input_ids, batch.attention_mask)
        logp = token_logprobs(lm, batch.input_ids, batch.attention_mask)
        assert torch.equal(discriminator_logits(rm, batch, "logit"), f)  # logit form: D = sigmoid(f)
        airl = discriminator_logits(rm, batch, "airl", logp)  # airl form: D = sigmoid(f - log pi)
    assert torch.allclose(airl, f - logp, atol=1e-6)
    assert not torch.allclose(airl, f)  # the two models differ, so log pi matters
    # a reward model that is a copy of the policy starts at f = log pi: every airl logit is 0 (D = 1/2)
    same = RewardModel(lm, head="token")
    with torch.no_grad():
        assert torch.allclose(discriminator_logits(same, batch, "airl", logp), torch.zeros_like(logp), atol=1e-6)
    with pytest.raises(ValueError, match="unknown discriminator form"):
        discriminator_logits(rm, batch, "gail")


def test_discriminator_logits_detach_the_policy(tok, lm) -> None:
    batch = encode(tok, PROMPTS, ANSWERS)
    rm = RewardModel(lm, head="scalar")
    logp = torch.randn(batch.input_ids.shape, requires_grad=True)
    discriminator_logits(rm, batch, "airl", logp).sum().backward()
    assert logp.grad is None  # the discriminator never trains the policy
    assert rm.head.weight.grad is not None


def _constant_reward_model(lm, value: float) -> RewardModel:
    rm = RewardModel(lm, head="scalar")
    with torch.no_grad():
        rm.head.bias.fill_(value)  # weight stays 0: f_t = value everywhere
    return rm


@pytest.mark.parametrize(("form", "f", "clip", "want"), [
    ("logit", 3.0, 2.0, 2.0),  # r = f = 3, clipped to 2
    ("logit", -3.0, 2.0, -2.0),  # clipped to -2
    ("logit", 3.0, 0.0, 3.0),  # clip 0 = off
    ("airl", 3.0, 5.0, 4.5),  # r = f - log pi = 3 - (-1.5) = 4.5, inside [-5, 5]
    ("airl", 3.0, 4.0, 4.0),  # 4.5 clipped to 4
])
def test_policy_rewards_mask_and_clip(tok, lm, form: str, f: float, clip: float, want: float) -> None:
    batch = encode(tok, PROMPTS, ANSWERS)
    rm = _constant_reward_model(lm, f)
    logp = torch.full(batch.input_ids.shape, -1.5)
    r = policy_rewards(rm, batch, form, logp, clip=clip)
    inside = batch.response_mask.bool()
    assert r.shape == batch.input_ids.shape
    assert torch.allclose(r[inside], torch.full_like(r[inside], want))
    assert torch.all(r[~inside] == 0)  # prompt and padding get nothing
    assert not r.requires_grad


@pytest.mark.parametrize(("form", "alpha", "want"), [
    ("airl", 1.0, 4.5),  # f - 1.0 * log pi = 3 + 1.5: AIRL's own reward
    ("airl", 0.5, 3.75),  # 3 + 0.5 * 1.5
    ("airl", 0.0, 3.0),  # f alone: no entropy bonus
    ("logit", 0.5, 3.0),  # the logit form has no log pi term to weigh
])
def test_entropy_coef_weighs_the_log_pi_term(tok, lm, form: str, alpha: float, want: float) -> None:
    batch = encode(tok, PROMPTS, ANSWERS)
    logp = torch.full(batch.input_ids.shape, -1.5)
    r = policy_rewards(_constant_reward_model(lm, 3.0), batch, form, logp, entropy_coef=alpha)
    inside = batch.response_mask.bool()
    assert torch.allclose(r[inside], torch.full_like(r[inside], want))
    assert torch.all(r[~inside] == 0)


# ---------------------------------------------------------------- negatives (M3, M9)

SOL1 = "Ben has 6*3 = <<6*3=18>>18 books.\nTogether they have 6+18 = <<6+18=24>>24 books.\n#### 24"
SOL2 = "Ava has 20-5 = <<20-5=15>>15 pens left.\n#### 15"
EXPERTS = [{"question": "Q1", "answer": SOL1}, {"question": "Q2", "answer": SOL2}]


def test_negatives_drop_copies_of_the_expert() -> None:
    samples = [("Q1", SOL1),  # identical to the expert trace of its question: dropped
               ("Q1", "  " + SOL1 + "\n"),  # identical after stripping whitespace: dropped
               ("Q1", SOL1.replace("#### 24", "#### 25")),  # differs: kept
               ("Q2", SOL1),  # an expert trace, but of another question: kept
               ("Q3", SOL2)]  # a question with no expert trace: kept
    policy, perturbed = negatives(EXPERTS, samples, k_perturbed=0, rng=random.Random(0))
    assert policy == samples[2:]
    assert perturbed == []


def test_negatives_add_perturbed_experts() -> None:
    samples = [("Q1", "wrong\n#### 3")]
    policy, perturbed = negatives(EXPERTS, samples, k_perturbed=2, rng=random.Random(0))
    assert policy == samples
    assert [q for q, _, _ in perturbed] == ["Q1", "Q1", "Q2", "Q2"]  # k = 2 copies per expert, in expert order
    answers = {t["question"]: t["answer"] for t in EXPERTS}
    for q, text, expert_text in perturbed:
        assert expert_text == answers[q]  # each copy carries the text it was made from
        assert text != answers[q] and text.strip() != answers[q].strip()
    again = negatives(EXPERTS, samples, k_perturbed=2, rng=random.Random(0))
    assert again == (policy, perturbed)  # deterministic in the rng


# ---------------------------------------------------------------- a perturbed copy is labelled from its change on (M3)


def test_first_difference() -> None:
    assert first_difference([5, 6, 7], [5, 9, 7, 8]) == 1
    assert first_difference([5, 6], [5, 6, 7]) == 2  # a prefix: the shorter one's length
    assert first_difference([4], [5]) == 0


def test_from_the_change_by_hand() -> None:
    # prompt_len 2; rows: an expert (response 3 tokens), a perturbed copy changed at its 2nd response token,
    # a perturbed copy changed at its first, a policy sample
    response_mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]])
    mask = from_the_change(response_mask, 2, [None, 1, 0, None])
    assert mask.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]]
    assert response_mask[1].tolist() == [0, 0, 1, 1, 1, 1]  # the batch's own mask is left alone


def test_from_the_change_to_the_end_of_its_line_by_hand() -> None:
    # prompt_len 2; a perturbed copy changed at its 2nd response token whose line ends after its 3rd
    response_mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]])
    mask = from_the_change(response_mask, 2, [None, 1], [None, 3])
    assert mask.tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0]]


def test_line_end_by_hand() -> None:
    pieces = ["3", "+", "4", " =", " 7", "\n", "####", " 7", "<eos>"]
    assert line_end(pieces, 0) == 6 and line_end(pieces, 4) == 6 and line_end(pieces, 5) == 6
    assert line_end(pieces, 7) == 9  # the last line: to the end
    assert line_end(["a", " 7\n\n", "b"], 0) == 2  # a token that holds the newline ends the line


def test_the_discriminator_labels_only_the_changed_line_with_line_labels(tok) -> None:
    copy = SOL1.replace("6+18 = <<6+18=24>>24", "6+18 = <<6+18=25>>25")  # the second line's result changed
    batch, _, labelled = discriminator_batch(tok, EXPERTS[:1], [("Q1", "wrong\n#### 3")], [("Q1", copy, SOL1)],
                                             labels="line")
    expert_ids, copy_ids = text_ids(tok, "x", SOL1)[1], text_ids(tok, "x", copy)[1]
    start = next(i for i, (a, b) in enumerate(zip(expert_ids, copy_ids)) if a != b)
    pieces = [tok.decode([t]) for t in copy_ids]
    end = next(i + 1 for i in range(start, len(pieces)) if "\n" in pieces[i])  # the changed line's newline
    assert "".join(pieces[start:end]) == "5>>25 books.\n" and end < len(copy_ids) - 2  # more lines follow
    P = batch.prompt_len
    assert labelled[0].tolist() == batch.response_mask[0].tolist()  # the expert: every response token
    assert labelled[1].tolist() == batch.response_mask[1].tolist()  # the policy's sample: every response token
    assert [i - P for i in labelled[2].nonzero().flatten().tolist()] == list(range(start, end))


def test_last_difference_by_hand() -> None:
    assert last_difference([1, 2, 3, 4, 5], [1, 9, 3, 4, 5]) == 2  # one token changed: [1, 2)
    assert last_difference([1, 2, 3, 4, 5], [1, 9, 3, 8, 5]) == 4  # two changes: first to last, [1, 4)
    assert last_difference([1, 2, 7, 7, 3], [1, 2, 3]) == 4  # two tokens inserted: [2, 4)
    assert last_difference([1, 2, 3], [1, 2, 4, 3]) == 3  # a token dropped: the next one, [2, 3), is the change
    assert last_difference([1, 1, 1], [1, 1]) == 3  # a repeat: never an empty change
    assert last_difference([1, 2], [1, 2, 3]) == 2  # a prefix of the expert: nothing past its end


def test_first_change_end_by_hand() -> None:
    assert first_change_end([1, 2, 3, 4, 5], [1, 9, 3, 4, 5]) == 2  # one token changed: [1, 2)
    assert first_change_end([1, 2, 3, 4, 5], [1, 9, 3, 8, 5]) == 2  # two changes: the first only, [1, 2)
    assert first_change_end([1, 2, 6, 4, 5, 6], [1, 9, 9, 4, 5, 7]) == 3  # a run of two, then another: [1, 3)
    assert first_change_end([1, 2, 7, 7, 3], [1, 2, 3]) == 4  # two tokens inserted: [2, 4)
    assert first_change_end([1, 2, 3], [1, 2, 4, 3]) == 3  # a token dropped: the next one, [2, 3), is the change
    assert first_change_end([1, 2, 3, 9], [1, 2, 4, 3, 5]) == 3  # dropped, then a later change: still [2, 3)
    assert first_change_end([1, 1, 1], [1, 1]) == 3  # a repeat: never an empty change
    assert first_change_end([1, 2], [1, 2, 3]) == 2  # a prefix of the expert: nothing past its end


def test_first_labels_weigh_only_the_first_change_half(tok) -> None:
    copy = SOL1.replace("6+18 = <<6+18=24>>24", "6+18 = <<6+18=25>>26")  # two results changed, apart
    args = (tok, EXPERTS[:1], [("Q1", "wrong\n#### 3")], [("Q1", copy, SOL1)])
    _, _, after = discriminator_batch(*args)
    batch, _, first = discriminator_batch(*args, labels="first")
    expert_ids, copy_ids = text_ids(tok, "x", SOL1)[1], text_ids(tok, "x", copy)[1]
    differ = [i for i, (a, b) in enumerate(zip(expert_ids, copy_ids)) if a != b]
    assert len(differ) == 2 and differ[1] > differ[0] + 1  # the 5 and the 6, with tokens between them
    assert torch.equal(first[:2], after[:2].float())  # the expert and the sample: every response token, weight 1
    assert torch.equal(first[2] > 0, after[2] > 0)  # the copy: labelled from its change to its end ...
    P, n_after = batch.prompt_len, int(after[2].sum())
    assert first[2, P + differ[0]].item() == pytest.approx(n_after - 1)  # ... its first change weighs half,
    assert first[2, P + differ[1]].item() == 1.0  # the later one as any other token after it


def test_change_labels_cover_only_the_tokens_that_differ(tok) -> None:
    copy = SOL1.replace("6+18 = <<6+18=24>>24", "6+18 = <<6+18=25>>25")  # the second line's result, twice
    batch, _, labelled = discriminator_batch(tok, EXPERTS[:1], [("Q1", "wrong\n#### 3")], [("Q1", copy, SOL1)],
                                             labels="change")
    expert_ids, copy_ids = text_ids(tok, "x", SOL1)[1], text_ids(tok, "x", copy)[1]
    differ = [i for i, (a, b) in enumerate(zip(expert_ids, copy_ids)) if a != b]
    assert len(expert_ids) == len(copy_ids) and len(differ) == 2  # the two 5s
    P = batch.prompt_len
    assert labelled[0].tolist() == batch.response_mask[0].tolist()  # the expert: every response token
    assert labelled[1].tolist() == batch.response_mask[1].tolist()  # the policy's sample: every response token
    assert [i - P for i in labelled[2].nonzero().flatten().tolist()] == list(range(differ[0], differ[-1] + 1))


def test_change_weighted_by_hand() -> None:
    after = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]])  # expert, two copies
    change = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    weighted = change_weighted(after, change)
    assert weighted[0].tolist() == [1, 1, 1, 1, 1, 0]  # nothing after a change: as it was
    assert weighted[1].tolist() == [0, 4, 1, 1, 1, 1]  # one changed token against four after it: weight 4
    assert weighted[2].tolist() == [0, 0, 0, 1, 1, 0]  # the change runs to the end: as it was
    bce = torch.tensor([[0.0, 2.0, 1.0, 1.0, 1.0, 1.0]])  # the loss's per-sequence mean: half change, half rest
    assert ((bce * weighted[1]).sum() / weighted[1].sum()).item() == pytest.approx(0.5 * 2.0 + 0.5 * 1.0)
    three_quarters = change_weighted(after, change, share=0.75)  # the changed token: 3 / 4 of the copy's loss
    assert three_quarters[1].tolist() == [0, 12, 1, 1, 1, 1] and three_quarters[0].tolist() == [1, 1, 1, 1, 1, 0]
    assert ((bce * three_quarters[1]).sum() / three_quarters[1].sum()).item() == pytest.approx(0.75 * 2 + 0.25 * 1)


def test_both_labels_weigh_the_changed_tokens_half(tok) -> None:
    copy = SOL1.replace("6+18 = <<6+18=24>>24", "6+18 = <<6+18=25>>25")
    args = (tok, EXPERTS[:1], [("Q1", "wrong\n#### 3")], [("Q1", copy, SOL1)])
    _, _, after = discriminator_batch(*args)
    _, _, change = discriminator_batch(*args, labels="change")
    _, _, both = discriminator_batch(*args, labels="both")
    assert torch.equal(both[:2], after[:2].float())  # the expert and the sample: every response token, weight 1
    assert torch.equal(both[2] > 0, after[2] > 0)  # the copy: labelled from its change to its end ...
    changed, rest = both[2][change[2].bool()], both[2][(after[2] - change[2]).bool()]
    assert changed.sum().item() == pytest.approx(rest.sum().item()) and (rest == 1).all()  # ... half and half


def test_the_discriminator_labels_a_perturbed_copy_from_its_first_changed_token(tok) -> None:
    copy = SOL1.replace("6+18 = <<6+18=24>>24", "6+18 = <<6+18=25>>25")  # the second line's result changed
    batch, source, labelled = discriminator_batch(tok, EXPERTS[:1], [("Q1", "wrong\n#### 3")],
                                                  [("Q1", copy, SOL1)])
    assert source == ["expert", "policy", "perturbed"]
    expert_ids, copy_ids = text_ids(tok, "x", SOL1)[1], text_ids(tok, "x", copy)[1]
    start = next(i for i, (a, b) in enumerate(zip(expert_ids, copy_ids)) if a != b)
    assert 0 < start < len(copy_ids) - 1
    P = batch.prompt_len
    assert labelled[0].tolist() == batch.response_mask[0].tolist()  # the expert: every response token
    assert labelled[1].tolist() == batch.response_mask[1].tolist()  # the policy's sample: every response token
    assert labelled[2, : P + start].sum() == 0  # the copy's shared prefix: no label
    assert labelled[2, P + start:].tolist() == batch.response_mask[2, P + start:].tolist()  # from the change on
    assert labelled[2].sum() == len(copy_ids) - start

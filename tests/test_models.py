"""Tests for minirl.models: the tokenizer, the tiny LM, log-probs under left padding, the reward model (M2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from minirl.logprobs import lm_forward, position_ids, token_logprobs
from minirl.models import ModelError, RewardModel, build_tiny_lm, build_tokenizer, load_lm
from minirl.rollout import encode, make_batch

PROMPTS = ["Question: Ava has 4 pens. How many?\nAnswer: ",
           "Question: Ben has 12 books. Cara has half as many books as Ben. How many books do they have?\nAnswer: "]
ANSWERS = ["Ava has 4 pens.\n#### 4", "Cara has 12/2 = <<12/2=6>>6 books.\n#### 18"]


# ---------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", [
    "Ben has 6*3 = <<6*3=18>>18 books.\n#### 24",
    "<<3*4=12>>",
    "0123456789",
    "line one\n\nline three\n",
    "  two leading spaces, a tab\tand a comma , spaced .",
    "Question: How much change does Mo get?\nAnswer: ",
])
def test_tokenizer_round_trip(tok, text: str) -> None:
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text


def test_every_digit_is_its_own_token(tok) -> None:
    ids = tok("12345", add_special_tokens=False).input_ids
    assert len(ids) == 5
    assert [tok.decode([i]) for i in ids] == list("12345")
    # inside text too: "<<3*4=12>>" holds the digits 3, 4, 1, 2 as four single-digit tokens
    pieces = [tok.decode([i]) for i in tok("<<3*4=12>>", add_special_tokens=False).input_ids]
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["3", "4", "1", "2"]


def test_digits_stay_single_even_when_merges_would_pay(corpus_texts) -> None:
    # a corpus full of "12" and "345" would make BPE merge them, were digits not pre-split
    tok = build_tokenizer(corpus_texts + ["12 12 345 12345 1212 345345"] * 200, vocab_size=320)
    assert len(tok("12345 1212", add_special_tokens=False).input_ids) == 5 + 1 + 4  # ' ' is one token


def test_tokenizer_specials(tok) -> None:
    assert len(tok) == 300
    ids = {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
    assert len(ids) == 3 and None not in ids
    assert getattr(tok, "chat_template", None) is None  # tiny models use the plain prompt


def test_tokenizer_save_load_round_trip(tok, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    text = PROMPTS[1] + ANSWERS[1]
    assert again(text, add_special_tokens=False).input_ids == tok(text, add_special_tokens=False).input_ids
    assert (again.pad_token_id, again.eos_token_id, again.bos_token_id) == (
        tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    assert len(again) == len(tok)


# ---------------------------------------------------------------- tiny LM and loading


def test_build_tiny_lm_sizes_and_seed(tok) -> None:
    a, b, c = build_tiny_lm(tok, "micro", seed=0), build_tiny_lm(tok, "micro", seed=0), build_tiny_lm(tok, "micro", 1)
    assert a.config.hidden_size == 64 and a.config.num_hidden_layers == 2 and a.config.vocab_size == 300
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    with pytest.raises(ModelError, match="unknown tiny size"):
        build_tiny_lm(tok, "huge")


def test_tiny_lm_save_load_round_trip(tok, lm, tmp_path: Path) -> None:
    with torch.no_grad():  # move away from the seed-0 init, so a freshly built model would not match
        for p in lm.parameters():
            p.add_(0.01 * torch.randn_like(p))
    lm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_lm(str(tmp_path))
    batch = encode(tok, PROMPTS, ANSWERS)
    with torch.no_grad():
        want = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        got = again.eval()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(got, want, atol=1e-6)
    assert tok2.pad_token_id == tok.pad_token_id
    assert again.generation_config.pad_token_id == tok.pad_token_id


def test_load_lm_run_folder_uses_its_policy(tok, lm, tmp_path: Path) -> None:
    lm.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    again, _ = load_lm(str(tmp_path))  # a minirl run folder: its policy/ is loaded
    assert torch.equal(again.model.embed_tokens.weight, lm.model.embed_tokens.weight)


def test_load_lm_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model") as err:
        load_lm(str(tmp_path / "missing"))
    assert "\n" not in str(err.value)


def test_load_lm_folder_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError) as err:
        load_lm(str(tmp_path))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- position ids and left padding


def test_position_ids_left_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    # cumsum - 1 = [[-1,-1,0,1],[0,1,2,3]], clamped at 0
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_left_padding_does_not_change_logprobs(tok, lm) -> None:
    short_p, short_r = tok(PROMPTS[0]).input_ids, tok(ANSWERS[0]).input_ids + [tok.eos_token_id]
    long_p, long_r = tok(PROMPTS[1]).input_ids, tok(ANSWERS[1]).input_ids + [tok.eos_token_id]
    alone = make_batch([short_p], [short_r], tok.pad_token_id)
    both = make_batch([long_p, short_p], [long_r, short_r], tok.pad_token_id)
    pad = len(long_p) - len(short_p)
    assert pad > 10 and len(long_r) > len(short_r)  # left padding before and right padding after the short row
    with torch.no_grad():
        a = token_logprobs(lm, alone.input_ids, alone.attention_mask)[0]
        b = token_logprobs(lm, both.input_ids, both.attention_mask)[1]
    n = len(short_p) + len(short_r)
    # column 0 has no prefix (0 by convention); in the padded row the first real token follows a pad
    assert torch.allclose(b[pad + 1: pad + n], a[1:n], atol=1e-5)
    assert a[0].item() == 0.0


def test_lm_forward_aligns_logprobs_with_tokens(tok, lm) -> None:
    batch = encode(tok, PROMPTS[:1], ANSWERS[:1])
    with torch.no_grad():
        logp, entropy, values = lm_forward(lm, batch.input_ids, batch.attention_mask, temperature=0.5,
                                           with_entropy=True)
        logits = lm(input_ids=batch.input_ids).logits[0] / 0.5  # one unpadded row: default positions agree
    ids = batch.input_ids[0]
    want = torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None]).squeeze(-1)
    assert torch.allclose(logp[0, 1:], want, atol=1e-5)
    probs = torch.softmax(logits[:-1], -1)
    assert torch.allclose(entropy[0, 1:], -(probs * probs.log()).sum(-1), atol=1e-4)
    assert values is None


# ---------------------------------------------------------------- reward model (M2)


def _batch(tok):
    return encode(tok, PROMPTS, ANSWERS)


def test_reward_model_token_head_is_logprob(tok, lm) -> None:
    rm = RewardModel(lm, head="token")
    batch = _batch(tok)
    with torch.no_grad():
        f = rm(batch.input_ids, batch.attention_mask)
        want = token_logprobs(lm, batch.input_ids, batch.attention_mask)
    assert f.shape == batch.input_ids.shape
    assert torch.equal(f, want)
    assert (f[:, 1:][batch.attention_mask[:, 1:].bool()] < 0).all()  # log-probs of real tokens


def test_reward_model_hybrid_head_is_the_token_head_plus_a_per_state_term(tok, lm) -> None:
    rm = RewardModel(lm, head="hybrid").eval()
    batch = _batch(tok)
    with torch.no_grad():
        logp = token_logprobs(lm, batch.input_ids, batch.attention_mask)
        assert torch.equal(rm(batch.input_ids, batch.attention_mask), logp)  # zero-initialised h: the token head
        rm.head.bias.fill_(10.0)  # h(s) = 10 everywhere: f_t = log pi_phi + 10 (untrained: log pi_phi ~ -6)
        f = rm(batch.input_ids, batch.attention_mask)
    real = batch.attention_mask[:, 1:].bool()
    assert torch.allclose(f[:, 1:][real], logp[:, 1:][real] + 10.0)
    assert f[:, 0].eq(0).all()  # column 0 has no state before it: nothing is paid there
    assert (f[:, 1:][real] > 0).all()  # unlike the token head's f = log-prob <= 0, not capped at 0


def test_reward_model_scalar_head_starts_at_zero(tok, lm) -> None:
    rm = RewardModel(lm, head="scalar")
    batch = _batch(tok)
    with torch.no_grad():
        z = rm(batch.input_ids, batch.attention_mask)
    assert z.shape == batch.input_ids.shape
    assert torch.equal(z, torch.zeros_like(z))
    with pytest.raises(ModelError, match="unknown reward head"):
        RewardModel(lm, head="value")


def test_reward_model_scalar_head_is_causal(tok, lm) -> None:
    rm = RewardModel(lm, head="scalar").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        rm.head.weight.normal_()
    batch = encode(tok, PROMPTS[:1], ANSWERS[:1])
    changed = batch.input_ids.clone()
    changed[0, -2] = (changed[0, -2] + 1) % len(tok)  # the token before EOS
    with torch.no_grad():
        a = rm(batch.input_ids, batch.attention_mask)
        b = rm(changed, batch.attention_mask)
    assert torch.allclose(a[:, :-2], b[:, :-2], atol=1e-6)  # z_t sees only the prefix up to t
    assert not torch.allclose(a[:, -2:], b[:, -2:])


@pytest.mark.parametrize("head", ["scalar", "token", "hybrid"])
def test_reward_model_save_load_round_trip(tok, lm, tmp_path: Path, head: str) -> None:
    rm = RewardModel(lm, head=head).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # away from every init: zero head, seed-0 backbone
        for p in rm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _batch(tok)
    with torch.no_grad():
        want = rm(batch.input_ids, batch.attention_mask)
    if head == "scalar":
        assert want[batch.attention_mask.bool()].abs().min() > 0
    if head == "hybrid":
        assert rm.head.weight.abs().min() > 0  # the head is part of the reward
    rm.save(tmp_path / "reward", tok)
    again = RewardModel.load(tmp_path / "reward").eval()
    assert again.head_kind == head
    with torch.no_grad():
        got = again(batch.input_ids, batch.attention_mask)
    assert torch.allclose(got, want, atol=1e-6)


def test_reward_model_load_needs_a_reward_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="reward.json"):
        RewardModel.load(tmp_path)

"""Shared fixtures: a small tokenizer fitted on synthetic-world text, and micro LMs (milliseconds to build)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from minirl.config import TrainConfig
from minirl.data import format_prompt, synthetic_tasks
from minirl.models import RewardModel, build_tiny_lm, build_tokenizer

# Micro models run ~20x faster on one thread than on two when the machine's other core is busy
# (2-core machine, experiments running beside the tests).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    """200 prompt + solution texts from the synthetic world (seed 0)."""
    tasks = synthetic_tasks(0, n_demos=20, n_corpus=200, n_test=20)
    return [format_prompt(t["question"], None) + t["answer"] for t in tasks["corpus"]]


@pytest.fixture(scope="session")
def tok(corpus_texts):
    """Shared, never mutated: tests that need other special tokens build their own."""
    return build_tokenizer(corpus_texts, vocab_size=300)


@pytest.fixture
def lm(tok):
    """A fresh micro Llama (seed 0) in eval mode."""
    return build_tiny_lm(tok, "micro", seed=0).eval()


def add_eos_bias(model: nn.Module, eos_id: int, bias: float) -> nn.Module:
    """Give the LM head a bias that makes EOS likely, so that sampled rows end at different
    lengths. The head keeps the (tied) embedding weight; only the bias is new."""
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    head.weight = model.get_input_embeddings().weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[eos_id] = bias
    model.lm_head = head
    return model


@pytest.fixture
def make_eos_lm():
    """make_eos_lm(tokenizer): a micro LM (seed 0, eval mode) whose EOS logit is raised by 3, so that
    in 12 sampled tokens (seed 0, T = 1 or 0.7) some rows end early at an EOS and some run to the limit."""
    return lambda tokenizer: add_eos_bias(build_tiny_lm(tokenizer, "micro", seed=0), tokenizer.eos_token_id, 3.0).eval()


@pytest.fixture
def eos_lm(tok, make_eos_lm):
    return make_eos_lm(tok)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro run folder: policy/, reward/ (token head, a copy of the policy) and config.json."""
    run = tmp_path_factory.mktemp("run")
    data = synthetic_tasks(0, n_demos=50, n_corpus=300, n_test=20)
    tok = build_tokenizer([t["question"] + "\n" + t["answer"] for t in data["corpus"] + data["demos"]])
    lm = build_tiny_lm(tok, "micro")
    lm.save_pretrained(run / "policy")
    tok.save_pretrained(run / "policy")
    RewardModel(copy.deepcopy(lm), "token").save(run / "reward", tok)
    cfg = TrainConfig(n_demos=50, n_corpus=300, size="micro", max_new_tokens=40)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    return run

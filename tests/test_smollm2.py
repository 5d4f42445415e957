"""A real pretrained chat model end to end (issue: real models on GSM8K).

SmolLM2-135M-Instruct as policy and reward backbone on offline copies named by environment
variables: MINIRL_SMOLLM2_GGUF (a .gguf file, e.g. the 4-bit SmolLM2-135M-Instruct.Q4_1.gguf) and
MINIRL_GSM8K_DIR (a folder with GSM8K's train.jsonl and test.jsonl). One AIRL iteration, then
one rerank. Marked slow (a few minutes on 2 cores) and skipped when either is unset or absent;
run with `python -m pytest -m slow`.
"""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minirl.cli import app
from minirl.config import from_preset
from minirl.train import train

GGUF = Path(os.environ.get("MINIRL_SMOLLM2_GGUF", "/nonexistent")).expanduser()
GSM8K = Path(os.environ.get("MINIRL_GSM8K_DIR", "/nonexistent")).expanduser()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GGUF.is_file(), reason="MINIRL_SMOLLM2_GGUF (a SmolLM2 .gguf file) unset or absent"),
    pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(), reason="MINIRL_GSM8K_DIR (GSM8K .jsonl) unset or absent"),
]


def test_smollm2_airl_iteration_and_rerank(tmp_path):
    cfg = from_preset("smollm2", "airl", init=str(GGUF), data=str(GSM8K / "train.jsonl"),
                      test_data=str(GSM8K / "test.jsonl"), out=str(tmp_path / "run"), steps=1, disc_warmup=1,
                      warmup_pool=1, prompts_per_iter=1, samples_per_prompt=2, minibatch_size=2, disc_batch=2,
                      eval_every=1, eval_questions=1, final_questions=2, eval_samples=2, max_new_tokens=48,
                      n_demos=20)
    summary = train(cfg)
    metrics = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    iteration = next(m for m in metrics if m.get("iter") == 1)
    assert abs(iteration["ratio_first"] - 1.0) < 1e-3  # log-probs agree between sampling and training
    assert 0.0 <= summary["sampled_acc"] <= 1.0 and "reward_auroc" in summary
    assert (tmp_path / "run/reward/reward.json").exists()

    result = CliRunner().invoke(app, ["rerank", "--run", str(tmp_path / "run"), "--n", "2", "--questions", "2",
                                      "--max-new-tokens", "48", "--out", str(tmp_path / "rerank.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "rerank.json").read_text())
    assert {"random", "majority", "logprob", "mean"} <= set(figures)


def test_smollm2_reward_alone_with_cached_top_layers(tmp_path):
    """`--algo reward` on SmolLM2 (30 layers, tied embeddings): the top 2 layers train on cached features, the held-out
    figures are written, and the saved reward model loads for `minirl inspect`."""
    cfg = from_preset("smollm2", "reward", init=str(GGUF), data=str(GSM8K / "train.jsonl"),
                      test_data=str(GSM8K / "test.jsonl"), out=str(tmp_path / "run"), steps=2, eval_every=1,
                      warmup_pool=1, eval_questions=2, eval_samples=1, max_new_tokens=32, n_demos=4, disc_batch=2,
                      train_layers=2)
    summary = train(cfg)
    assert 0.0 <= summary["clean_vs_perturbed_auroc_reward_mean"] <= 1.0 and summary["heldout_expert"] == 2
    result = CliRunner().invoke(app, ["inspect", "--run", str(tmp_path / "run"), "--localisation", "2"])
    assert result.exit_code == 0, result.output

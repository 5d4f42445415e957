"""A real pretrained chat model end to end (issue: real models on GSM8K).

SmolLM2-135M-Instruct (4-bit GGUF, from `../shared/bin/get-smollm2`) as policy and reward
backbone on the local GSM8K files: one AIRL iteration, then one rerank. Marked slow (a few
minutes on 2 cores) and skipped when the model or the data is absent; run with
`python -m pytest -m slow`.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minirl.cli import app
from minirl.config import from_preset
from minirl.train import train

GGUF = Path.home() / ".cache/minirl-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
GSM8K = Path(__file__).resolve().parents[2] / "shared/data/gsm8k"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GGUF.exists(), reason="SmolLM2 GGUF absent (run ../shared/bin/get-smollm2)"),
    pytest.mark.skipif(not (GSM8K / "test.jsonl").exists(), reason="../shared GSM8K files absent"),
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

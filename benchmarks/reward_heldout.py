"""Held-out figures of a finished `minirl train --algo reward` run, recomputed from its saved reward model.

    python benchmarks/reward_heldout.py runs/smollm2-reward [--out runs/smollm2-reward/heldout.json]

Reads the run's settings, its policy/ and reward/ folders and the held-out answers of its sample pool (pool.jsonl),
rebuilds the held-out traces exactly as training did (the same problems, the same perturbations), caches their
features and prints `fit_reward.heldout_figures` with 95 % bootstrap intervals (the table `minirl train` prints at
the end). Use it after changing how the figures are computed, or to look again without retraining. Sampling is
never repeated: only the pool's answers are scored. ~3 minutes for SmolLM2 on 2 cores (100 problems).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import typer
from rich.console import Console

from minirl import runs
from minirl.config import config_from
from minirl.data import load_tasks
from minirl.fit_reward import cache_features, heldout_figures, make_traces, top_layers
from minirl.pool import pooled, read_pool
from minirl.tables import fit_table


def main(run: Path = typer.Argument(..., help="a finished `--algo reward` run folder"),
         out: Path = typer.Option(None, help="also write the figures here as JSON")) -> None:
    cfg = config_from(runs.saved_config(run))
    policy, tokenizer, reward_model, _ = runs.load_run(run)
    test = load_tasks(cfg)["test"][: cfg.eval_questions]
    answers = pooled(read_pool(run / "pool.jsonl"), cfg, "test", len(test))
    heldout = make_traces(tokenizer, test, answers, random.Random(cfg.seed + 1))  # as fit_reward builds them
    k = cfg.train_layers or len(policy.model.layers)
    cache_features(policy, heldout, k, tokenizer.pad_token_id, max(cfg.micro_batch_size, 8), cfg.precision)
    figures = heldout_figures(cfg, reward_model, top_layers(reward_model.lm, k), heldout, tokenizer.pad_token_id,
                              intervals=True)
    Console().print(fit_table(figures, f"held-out figures · {run}"))
    if out:
        out.write_text(json.dumps(runs.finite_or_none(figures), indent=2))


if __name__ == "__main__":
    typer.run(main)

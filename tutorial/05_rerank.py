"""Step 05 - best-of-N with the learned reward: an inference-time critic (method.md M5, M7, M9).

Run:  python tutorial/05_rerank.py      (needs step 04's AIRL run; builds it when missing)
Same as:  minirl rerank --run runs/tutorial/airl-tiny --n 16 --questions 100

Sample N = 16 solutions per held-out question from the AIRL policy, score every trace with the reward model
trained alongside it, and keep the top k. A reranker is only worth something if it beats the baselines that
cost nothing (M5):
  random    the *expected* accuracy of a uniform pick among the top k (not "the first k": M9, ties);
  majority  the most frequent final answer (self-consistency), k = 1 only;
  logprob   the policy's own mean token log-prob: does the model already know when it is right?
  mean      the learned reward: mean token reward f over the trace;
  discounted  the paper's selector: discounted reward-to-go (gamma 0.9) averaged over the answer line;
  oracle    a right sample is among the top k whenever one exists: the ceiling, = pass@k.

It prints one table of success@1/4/16 (with a 95 % bootstrap interval at k = 1) and the within-question and
pooled AUROC of each score, then the gain of the learned reward over the random pick and over log-prob.
"""

from __future__ import annotations

import torch
from _common import ensure_run, load_run, pick
from rich.console import Console

from minirl import rerank, tables
from minirl.config import config_from
from minirl.data import load_tasks

N, QUESTIONS = pick(16, 4), pick(100, 4)
console = Console()

# ---------------------------------------------------------------- 1. sample and score
# One record per question: its N samples, each with its text, correctness, mean policy log-prob and per-token
# rewards. Everything after this is arithmetic on the records (`rerank_table`), no model needed.
airl_dir = ensure_run("airl")
policy, tokenizer, reward_model, config = load_run(airl_dir)  # runs.load_run; a broken run: one error line
cfg = config_from(config)  # the run's own settings: its world (same seed -> same held-out problems)
test = load_tasks(cfg)["test"][:QUESTIONS]
torch.manual_seed(0)
records = rerank.sample_and_score(policy, tokenizer, test, N, cfg.max_new_tokens, reward_model, cfg.temperature,
                                  cfg.top_p, progress=console.is_terminal)
print(f"{len(records)} held-out questions x {N} samples from {airl_dir}; "
      f"{sum(s['correct'] for r in records for s in r['samples'])} of {len(records) * N} samples right")

# ---------------------------------------------------------------- 2. success@k|N for every score
ks = tuple(k for k in (1, 4, 16) if k <= N)
figures = rerank.rerank_table(records, ks)
labels = {"random": "random pick", "majority": "majority vote", "logprob": "policy log-prob", "mean": "reward: mean",
          "discounted": "reward: discounted", "oracle": "oracle"}  # the rows to show, in this order
title = f"best-of-{N}: success@k on {len(records)} questions (CI: 95 % bootstrap)"
console.print(tables.rerank_table_view(figures, ks, title, labels, ci=True))  # `minirl rerank`'s table, plus CI @1

# ---------------------------------------------------------------- 3. what to read off it
# The gap between "random" and "oracle" at k = 1 is the room a reranker has. The paper's gains at N = 16 were
# +12 to +18 points for Llama and none for Qwen-7B (M8). In this world log-prob ranks the confident
# misconceptions *above* right answers (within-question AUROC near or below 0.5, step 02), so it should do no
# better than random; the learned reward should (M9).
gain = figures["mean"]["success@1"] - figures["random"]["success@1"]
over = figures["mean"]["success@1"] - figures["logprob"]["success@1"]
print(f"success@1: learned reward {figures['mean']['success@1']:.3f}, {gain * 100:+.1f} points over a random pick "
      f"and {over * 100:+.1f} over log-prob; the oracle's ceiling is {figures['oracle']['success@1']:.3f}")

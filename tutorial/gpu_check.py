"""Device check: the tiny pipeline end to end on one CUDA GPU, in a few minutes.

    python tutorial/gpu_check.py                      # the tiny preset: pretrain, reward, AIRL
    MINIRL_GPU_CHECK_MODEL=/path/or/hub-id python tutorial/gpu_check.py   # plus a real model, if reachable
                                          # (on GSM8K from the hub, or from the folder MINIRL_GSM8K_DIR names)

Prints held-out accuracy before and after AIRL, the reward's AUROC, seconds per AIRL iteration
(sampling / scoring / update) and the peak GPU memory. Without CUDA it says so and stops: the
same pipeline on a CPU is `minirl train`. Run folders go to a temporary directory.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from minirl.config import from_preset
from minirl.train import train

if not torch.cuda.is_available():
    print("no CUDA device here: nothing to check (on a CPU, run `minirl train`)")
    sys.exit(0)

out = Path(tempfile.mkdtemp(prefix="minirl-gpu-check-"))
print(f"device: {torch.cuda.get_device_name(0)}; runs in {out}")
torch.cuda.reset_peak_memory_stats()
started = time.time()
base = train(from_preset("tiny", "pretrain", out=str(out / "base"), steps=300, final_questions=200))
airl = train(from_preset("tiny", "airl", init=str(out / "base"), out=str(out / "airl"), steps=30, eval_every=15,
                         final_questions=200))
rows = [("base sampled_acc", base["sampled_acc"]), ("AIRL sampled_acc", airl["sampled_acc"]),
        ("AIRL greedy_acc", airl["greedy_acc"]), ("reward AUROC (within question)", airl["reward_auroc"]),
        ("best-of-8 by reward / random", f"{airl['bo8_reward']:.3f} / {airl['bo8_random']:.3f}"),
        ("s per iteration: sample / score / update",
         " / ".join(f"{airl[k]:.2f}" for k in ("s_sample_per_iter", "s_score_per_iter", "s_update_per_iter"))),
        ("peak GPU memory (GiB)", torch.cuda.max_memory_allocated() / 2**30),
        ("wall seconds, both runs", time.time() - started)]

model = os.environ.get("MINIRL_GPU_CHECK_MODEL")
if model:  # a real chat model on a few GSM8K problems: does the same code run, and how much memory?
    torch.cuda.reset_peak_memory_stats()
    gsm8k = Path(os.environ.get("MINIRL_GSM8K_DIR", "/nonexistent"))  # an offline copy, else the hub's splits
    data = dict(data=str(gsm8k / "train.jsonl"), test_data=str(gsm8k / "test.jsonl")) if gsm8k.exists() else {}
    real = train(from_preset("gsm8k-qwen0.5b", "airl", init=model, reward_init="", out=str(out / "real"), steps=2,
                             eval_every=2, disc_warmup=2, warmup_pool=4, eval_questions=8, final_questions=16,
                             eval_samples=4, **data))
    rows += [(f"{model}: sampled_acc (16 questions)", real["sampled_acc"]),
             (f"{model}: s per iteration (sample/score/update)",
              " / ".join(f"{real[k]:.1f}" for k in ("s_sample_per_iter", "s_score_per_iter", "s_update_per_iter"))),
             (f"{model}: peak GPU memory (GiB)", torch.cuda.max_memory_allocated() / 2**30)]

print("\n== minirl GPU check ==")
for name, value in rows:
    print(f"{name:45s} {value:.3f}" if isinstance(value, float) else f"{name:45s} {value}")

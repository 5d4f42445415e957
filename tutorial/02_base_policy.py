"""Step 02 - the base policy: pretrained on the misconception corpus, then SFT on the demonstrations (M6, M9).

Run:  python tutorial/02_base_policy.py      (full size: pretraining is the longest step of the tutorial)

The paper starts from an off-the-shelf instruct model that makes *confident reasoning errors*. Our stand-in is
a 0.7M-parameter Llama pretrained on step 01's corpus, where each wording cue triggers its misconception with
probability 0.6. Then, as the paper's SFT baseline (M6), we fine-tune that base policy on the 400 clean
demonstrations with plain cross-entropy on the completion tokens (`minirl/sft.py::sft_loss`).

It prints each run's live progress, both final evaluations side by side in one table (greedy_acc, sampled_acc,
pass@k, maj@k, logprob_auroc), and a few sentences on what the numbers say about the base policy.
Both runs are kept in RUNS (base-tiny, sft-tiny); later steps reuse the base policy from there. A figure of both
runs (training loss, held-out accuracy, and the log-prob of right vs wrong samples) is saved as
RUNS/02_base_policy.png when matplotlib is installed.
"""

from __future__ import annotations

from _common import FAST, RUNS, ensure_run, fast_overrides, save_figure, summary
from rich.console import Console
from rich.table import Table

from minirl.config import from_preset

console = Console()

# ---------------------------------------------------------------- 1. pretraining: the base policy
# `from_preset("tiny", "pretrain")` = TrainConfig's defaults + the tiny preset's pretrain overrides (600 steps of
# 64 corpus examples, lr 3e-3). With no `init`, train() fits a small BPE tokenizer on the world's text (every
# digit its own token) and builds a fresh tiny Llama. The run folder gets policy/, metrics.jsonl, summary.json.
cfg = from_preset("tiny", "pretrain", **fast_overrides())
print(f"pretraining: {cfg.steps} steps x {cfg.prompts_per_iter} corpus examples, lr {cfg.lr}, "
      f"misconception rate {cfg.misconception_rate}, model size {cfg.size!r}")
base_dir = ensure_run("pretrain")  # train(cfg) into runs/tutorial/base-tiny, unless a run with cfg is there
base = summary(base_dir)  # the final evaluation of the best checkpoint

# ---------------------------------------------------------------- 2. SFT on the demonstrations (M6)
# Same loss, other data: the clean expert solutions, starting from the base policy (`init`). This is the
# baseline AIRL is judged against (M6); in this miniature every misconception has a wording cue that the
# demonstrations show solved correctly, so SFT is expected to do very well here (M9, third trial).
cfg = from_preset("tiny", "sft", init=str(base_dir), **fast_overrides())
print(f"SFT: {cfg.steps} steps x {cfg.prompts_per_iter} demonstrations, lr {cfg.lr}, from {cfg.init}")
sft_dir = ensure_run("sft")
sft = summary(sft_dir)

# ---------------------------------------------------------------- 3. side by side
# All figures are on the same held-out problems, k samples each at T = 1 (M5, M7):
#   greedy_acc     the argmax path: what the policy *believes*;
#   sampled_acc    one sample at T = 1 (= the expected accuracy of a uniform pick among the k);
#   pass@k, maj@k  some sample right / the majority answer right;
#   logprob_auroc  within-question AUROC of the policy's mean token log-prob against correctness (M7):
#                  0.5 = log-prob cannot tell its right samples from its wrong ones; below 0.5 = it prefers wrong.
k = next(key for key in base if key.startswith("pass@")).split("@")[1]
rows = ["greedy_acc", "sampled_acc", f"pass@{k}", f"maj@{k}", f"bo{k}_logprob", "logprob_auroc"]
table = Table(title=f"held-out evaluation ({base['questions']} questions x {k} samples)")
for column in ("figure", "base policy (pretrained)", "SFT on demonstrations"):
    table.add_column(column, justify="left" if column == "figure" else "right")
for key in rows:
    table.add_row(key, *(f"{s[key]:.3f}" for s in (base, sft)))
console.print(table)

# ---------------------------------------------------------------- 4. why the base policy is confidently wrong
# With a cue, the misconceived step has probability ~0.6 under the base policy, the right one ~0.4. Greedy
# decoding takes the likelier branch every time, so it is *worse* than sampling; and the wrong traces are the
# *likely* ones, so ranking samples by log-prob prefers them (AUROC near or below 0.5). That is the regime of
# real LLMs' reasoning errors, in which a learned reward has something to add over log-prob (M9).
print(f"\nbase policy: greedy {base['greedy_acc']:.2f} vs sampled {base['sampled_acc']:.2f}; "
      f"pass@{k} {base[f'pass@{k}']:.2f}: the right answer is often *among* its samples, but not its favourite.")
print(f"base policy: log-prob AUROC {base['logprob_auroc']:.2f}, best-of-{k} by log-prob {base[f'bo{k}_logprob']:.2f} "
      f"vs a random pick {base['sampled_acc']:.2f}: its own confidence does not find the right sample.")
print(f"SFT: sampled {sft['sampled_acc']:.2f} (from {base['sampled_acc']:.2f}): the demonstrations fix the habits "
      "directly, because each misconception has a wording cue the demos show solved correctly.")
# The same in pictures: both runs' loss and held-out accuracy, and for each the policy's mean log-prob of its right
# and wrong samples: where the wrong ones sit to the right (likelier), log-prob ranks them first.
save_figure([base_dir, sft_dir], RUNS / "02_base_policy.png")
if FAST:
    print("(reduced mode: a micro model trained for 3 steps; these numbers mean nothing)")

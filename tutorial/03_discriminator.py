"""Step 03 - the discriminator alone: learn a dense reward from demonstrations, no PPO yet (method.md M2, M3, M7).

Run:  python tutorial/03_discriminator.py      (needs step 02's base policy; builds it when missing)

The reward model is a trainable copy of the base policy with the `token` head (M2): its reward for token y_t
is f_t = log pi_phi(y_t | x, y_<t). In the `airl` form the discriminator is D_t = sigmoid(f_t - log pi(y_t|s_t)),
so at initialisation f = log pi, D = 1/2 everywhere and the loss is log 2 = 0.693: training only has to learn a
*correction* to the policy. Positives are the expert demonstrations; negatives are the policy's own samples
and perturbed experts (M3).

It prints: the discriminator's loss and per-source accuracy while it trains; then, on held-out problems, the
within-question AUROC and best-of-N of the learned reward beside the policy's own log-prob (M7), per problem
kind; then the same after training on demonstrations that leave out every "half as many" problem. Both
discriminators' steps and scored samples are written as run files (RUNS/03_discriminator/all and .../blind), and a
figure of them (accuracy per source while training, reward of right vs wrong samples) is saved there when
matplotlib is installed.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import torch
from _common import RUNS, ensure_run, load_run, pick, save_figure
from rich.console import Console
from rich.table import Table

from minirl import airl, rerank
from minirl.data import synthetic_tasks
from minirl.models import RewardModel
from minirl.rollout import sample_answers

STEPS = pick(300, 4)  # discriminator optimiser steps (M9: ~300-400 were enough at this scale)
EVERY = pick(25, 1)  # print every EVERY steps
EXPERTS = pick(16, 4)  # expert traces per step, and as many of the policy's own samples
N, N_TEST = pick(8, 2), pick(100, 6)  # held-out evaluation: N samples of each of N_TEST questions
LEAVE_OUT = "half_as_many"  # the misconception whose problems the second discriminator never sees solved
console = Console()

# ---------------------------------------------------------------- the base policy and its world
base_dir = ensure_run("pretrain")
policy, tokenizer, _, config = load_run(base_dir)  # runs.load_run: policy in eval mode; no reward model here
world = dict(n_demos=config["n_demos"], n_corpus=config["n_corpus"], misconception_rate=config["misconception_rate"])
max_new = config["max_new_tokens"]
rng = random.Random(0)


def own_samples(demos: list[dict], per_problem: int = 2) -> list[tuple[str, str]]:
    """(question, response) pairs: the *base* policy's samples of the demonstration problems, drawn once (T = 1).
    Sampling once and reusing the pool keeps this step fast; AIRL (step 04) resamples every iteration."""
    torch.manual_seed(0)
    questions = [t["question"] for t in demos]
    return [(questions[i], text) for rows, batch in sample_answers(policy, tokenizer, questions, per_problem, max_new)
            for i, text in zip(rows, batch.texts(tokenizer))]


def train_discriminator(demos: list[dict], title: str, folder: Path) -> RewardModel:
    """STEPS steps of token-level BCE (M2): experts (label 1) vs own samples and perturbed experts (label 0); each
    step's figures go to `folder`/metrics.jsonl, as the warm-up of an AIRL run writes them (for the figure)."""
    pool = own_samples(demos)
    # M9: a sample identical to the expert trace of its problem is an expert trace; labelled negative it makes
    # the loss stall at log 2. `negatives` drops those (checked against *every* demonstration here, k = 0 so
    # that no perturbed copies are made yet).
    own_pool, _ = airl.negatives(demos, pool, 0, rng)
    print(f"\n== {title}: {len(demos)} demonstrations; {len(pool)} own samples, "
          f"{len(pool) - len(own_pool)} identical to the expert trace dropped")
    reward_model = RewardModel(copy.deepcopy(policy), "token")  # f = log pi at the start (M2, token head)
    optimizer = torch.optim.AdamW(reward_model.parameters(), lr=1e-4, weight_decay=0.0)
    logged = []
    print(f"{'step':>5} {'loss':>6} | acc: {'expert':>6} {'own':>5} {'perturbed':>9} | "
          f"mean logit: {'expert':>6} {'own':>6} {'perturbed':>9}")
    for step in range(1, STEPS + 1):
        experts = rng.sample(demos, EXPERTS)
        # one corrupted copy of each expert (M3), labelled 0 only from its first changed token: before it, it is
        # its expert's trace, with the same hidden states
        _, perturbed = airl.negatives(experts, [], 1, rng)
        own = rng.sample(own_pool, min(EXPERTS, len(own_pool)))
        # M2: loss = 1/2 mean over experts + 1/2 mean over negatives of (1/T) sum_t BCE(D_t, target), targets
        # 0.95 / 0.05 (label smoothing 0.1), response tokens only; the policy's log pi is detached.
        stats = airl.discriminator_step(reward_model, optimizer, policy, tokenizer, experts, own, perturbed,
                                        form="airl")
        logged.append({"warmup_step": step, **stats})
        if step % EVERY == 0 or step == 1:
            # accuracy: a trace counts as "expert" when its mean token logit f - log pi is above 0 (mean D > 1/2)
            print(f"{step:5d} {stats['disc_loss']:6.3f} |      {stats['disc_acc_expert']:6.2f} "
                  f"{stats['disc_acc_policy']:5.2f} {stats['disc_acc_perturbed']:9.2f} |             "
                  f"{stats['disc_logit_expert']:+6.2f} {stats['disc_logit_policy']:+6.2f} "
                  f"{stats['disc_logit_perturbed']:+9.2f}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in logged))
    return reward_model.eval()


def held_out(reward_model: RewardModel, folder: Path) -> list[dict]:
    """N samples of each held-out question, each scored by the policy's log-prob and the learned reward, also
    saved to `folder`/eval_samples.jsonl. The same seed gives the same samples for both reward models, so only
    the scores differ."""
    torch.manual_seed(1)
    records = rerank.sample_and_score(policy, tokenizer, test, N, max_new, reward_model, progress=False)
    rerank.save_records(records, folder / "eval_samples.jsonl")
    return records


# ---------------------------------------------------------------- 1. train on all the demonstrations
tasks = synthetic_tasks(config["seed"], **world)
test = tasks["test"][:N_TEST]
FOLDERS = {"all": RUNS / "03_discriminator" / "all", "blind": RUNS / "03_discriminator" / "blind"}
reward_model = train_discriminator(tasks["demos"], "discriminator on all demonstrations", FOLDERS["all"])

# ---------------------------------------------------------------- 2. does the reward rank right above wrong?
# M7/M9: judge a score *within* each question (over its N samples); a pooled AUROC can be high only because
# the score knows which questions are hard, which does nothing for best-of-N. "mean" = the mean token reward f
# of a trace (M5); "logprob" = the policy's own mean token log-prob; "random" = the expected accuracy of a
# uniform pick (= mean sample accuracy, M9).
records = held_out(reward_model, FOLDERS["all"])
table = rerank.rerank_table(records, ks=(1, N))
results = Table(title=f"held-out: {N_TEST} questions x {N} samples from the base policy")
for column in ("score", f"best-of-{N}", "AUROC within q", "AUROC pooled"):
    results.add_column(column, justify="left" if column == "score" else "right")
for method, label in [("random", "random pick"), ("majority", "majority vote"), ("logprob", "policy log-prob"),
                      ("mean", "learned reward (mean f)"), ("oracle", f"oracle (= pass@{N})")]:
    row = table[method]
    results.add_row(label, f"{row['success@1']:.3f}", *(f"{row[key]:.3f}" if key in row else "" for key in
                                                       ("auroc", "auroc_pooled")))
console.print(results)
print(f"within-question AUROC: learned reward {table['mean']['auroc']:.3f} vs policy log-prob "
      f"{table['logprob']['auroc']:.3f} (0.5 = no better than a coin)")

# ---------------------------------------------------------------- 3. leave one misconception out of the demos
# The discriminator learns the contrasts the experts show, nothing more (M9). Drop every demonstration whose
# wording cues "half as many" (kinds half_total and three_step): the expert never halves, so nothing
# separates halving from the policy's doubling, and the reward stops catching that misconception.
blind = train_discriminator(synthetic_tasks(config["seed"], leave_out=LEAVE_OUT, **world)["demos"],
                            f"discriminator without any {LEAVE_OUT!r} demonstration", FOLDERS["blind"])
blind_records = held_out(blind, FOLDERS["blind"])
same = [s["text"] for r in records for s in r["samples"]] == [s["text"] for r in blind_records for s in r["samples"]]
print(f"same held-out samples as before: {same}")
full_kind, blind_kind = rerank.by_kind(records), rerank.by_kind(blind_records)
blind_kinds = {t["kind"] for t in tasks["test"] if LEAVE_OUT in t["cues"]}  # the kinds whose wording cues it
kinds = Table(title=f"per problem kind (*: its wording cues {LEAVE_OUT}, absent from the 'blind' demos)")
for column in ("kind", "n", "random", "AUROC logp", "AUROC all", "AUROC blind", f"bo{N} all", f"bo{N} blind"):
    kinds.add_column(column, justify="left" if column == "kind" else "right", no_wrap=column == "kind")
for kind, row in full_kind.items():  # bo = best-of-N by the learned reward (success@1); logp = policy log-prob
    cells = [row["random"], row["auroc_logprob"], row["auroc_mean"], blind_kind[kind]["auroc_mean"], row["bo_mean"],
             blind_kind[kind]["bo_mean"]]
    flag = " *" if kind in blind_kinds else ""
    kinds.add_row(kind + flag, str(row["questions"]), *(f"{c:.2f}" for c in cells))
console.print(kinds)
# In pictures: each discriminator's accuracy per source while it trains, and the trace reward of right vs wrong
# held-out samples (the less the two overlap, the better best-of-N works), beside the policy's log-prob.
save_figure(list(FOLDERS.values()), RUNS / "03_discriminator" / "curves.png")
print("Expect the rows marked * to lose much of their AUROC and best-of-N without their demonstrations (M9's "
      "trial: AUROC 1.00 -> 0.05-0.37), while the other kinds keep theirs.")

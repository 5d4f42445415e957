"""Step 06 - per-token rewards in colour, and error localisation (method.md M2, M3, M7).

Run:  python tutorial/06_inspect.py      (needs step 04's AIRL run; builds it when missing)
Same as:  minirl inspect --run runs/tutorial/airl-tiny --perturb operator   and   ... --localisation 100

The reward is *dense*: every response token gets one (M2). With the `token` head the value shown per token is
f_t - log pi(y_t|s_t), the discriminator's logit in the `airl` form, i.e. exactly what PPO paid the policy for
that token (0 where the reward model agrees with the policy, negative where it finds the token un-expert-like).
If the reward has learned anything about reasoning, the lowest-reward token should sit where a trace goes wrong.

It prints: one of the policy's wrong samples with each token coloured by its reward (orange low, blue high; the
first wrong line marked); an expert trace and a perturbed copy of it (M3), the changed token marked; then
Hit@1/Hit@3/Step@1 over perturbed held-out traces (the table of `minirl inspect --localisation`), beside the
policy's log-prob and chance, for two ways of picking the blamed token: the lowest-scoring one, and the first one
below a threshold (errors propagate, so the worst token is often a later echo of the first mistake). Without
colour (NO_COLOR=1, or piped) each trace is printed one token per line.
"""

from __future__ import annotations

import random

import torch
from _common import ensure_run, load_run, pick
from rich.console import Console

from minirl import localise, tables, viz
from minirl.config import config_from
from minirl.data import format_prompt, is_correct, load_tasks
from minirl.perturb import perturb
from minirl.rollout import sample

console = Console()
airl_dir = ensure_run("airl")
policy, tokenizer, reward_model, config = load_run(airl_dir)  # runs.load_run; a broken run: one error line
cfg = config_from(config)
test = load_tasks(cfg)["test"]

# ---------------------------------------------------------------- 1. one wrong sample
# Sample the policy once on a few held-out questions and take the first wrong answer. In this world the right
# solution is deterministic text, so "the first line that differs from it" is where the sample went wrong.
# `localise.score_traces` scores traces of one question: per token the shown value (the `token` head: f - log pi;
# the `scalar` head: z, M2), and the character `span` to mark as a token range, `mark`.
torch.manual_seed(0)
tasks = test[: pick(32, 4)]
batch = sample(policy, tokenizer, [format_prompt(t["question"], tokenizer) for t in tasks], cfg.max_new_tokens,
               cfg.temperature, cfg.top_p)
wrong = [(t, x) for t, x in zip(tasks, batch.texts(tokenizer)) if not is_correct(x, t["answer"])]
if wrong:
    task, text = wrong[0]
    trace = localise.score_traces(policy, tokenizer, reward_model, task["question"], [
        {"text": text, "span": localise.first_wrong_line_span(text, task["answer"])}])[0]
    console.print(f"\n[bold]question:[/] {task['question']}")
    viz.print_trace(trace["tokens"], trace["scores"], console, mark=trace["mark"],
                    title=f"a wrong sample (expected {task['answer'].split('####')[-1].strip()}); marked: its "
                          "first wrong line")
else:
    print(f"all {len(tasks)} samples were right: no wrong sample to show")

# ---------------------------------------------------------------- 2. an expert trace and a perturbed copy (M3)
# Same question, two traces that differ in one place: "operator" flips one + - * / and keeps the written
# result, so the step no longer adds up. One colour scale for both traces, so their colours compare.
task = next(t for t in test if t.get("kind") == "three_step")
changed_text, span, kind = perturb(task["answer"], random.Random(0), "operator")
traces = [{"text": task["answer"], "span": None}, {"text": changed_text, "span": span}]
expert, perturbed = localise.score_traces(policy, tokenizer, reward_model, task["question"], traces)
scale = max(abs(v) for trace in (expert, perturbed) for v in trace["scores"]) or 1.0
console.print(f"\n[bold]question:[/] {task['question']}")
viz.print_trace(expert["tokens"], expert["scores"], console, title="expert trace", scale=scale)
mark = perturbed["mark"]
viz.print_trace(perturbed["tokens"], perturbed["scores"], console, mark=mark, scale=scale,
                title=f"perturbed expert ({kind}); marked: the change")
if mark is not None:
    scores = perturbed["scores"][:-1]  # the EOS is never blamed
    lowest_hit = localise.hit_at_k(localise.lowest(scores), mark, 1)
    first_hit = localise.hit_at_k(localise.first_below(scores, -1.0), mark, 1)
    print(f"lowest-reward token inside the change: {'yes' if lowest_hit else 'no'}; "
          f"first token below -1 inside it: {'yes' if first_hit else 'no'}")

# ---------------------------------------------------------------- 3. Hit@1 over many perturbed traces (M7)
# Perturb the first n held-out expert traces by a random rule each. For every score, rank the tokens (EOS left
# out) two ways: `lowest` (lowest score first, the paper's rule) and `first` (the tokens below a threshold tau in
# reading order: a wrong step result makes the later steps that use it look wrong too, so the *first* bad token
# is the better guess). tau is chosen on one half of the traces and used on the other (`localise.cross_fit`; the
# table shows the tau of each half). Hit@1: the first-ranked token is inside the change (95 % bootstrap interval);
# Hit@3: one of the first three; Step@1: the line picked (lowest mean score, or holding the first flagged token)
# overlaps it. Chance = a uniform token. "reward f - log pi" is what PPO was paid per token (the `airl` form, M2).
# The paper (M8): dense token reward 62 %, policy log-prob 26 %, chance 12 %.
figures = localise.localisation(policy, tokenizer, reward_model, test, pick(100, 6), cfg.max_new_tokens, seed=0,
                                own_samples=False)["perturbed"]
title = f"error localisation on {figures['n']} perturbed held-out expert traces"
console.print(tables.localisation_table(figures, title))  # the table `minirl inspect --localisation` prints
for kind, row in figures["by_kind"].items():
    print(f"Hit@1 on {kind:>8} perturbations (n={row['n']}): reward lowest {row['reward']:.2f}, "
          f"first {row.get('reward_first', float('nan')):.2f}; log-prob lowest {row['policy_logprob']:.2f}, "
          f"first {row.get('policy_logprob_first', float('nan')):.2f}; chance {row['chance']:.2f}")

"""Step 04 - AIRL: train the policy with PPO on the reward the discriminator learns as it goes (method.md M2, M4).

Run:  python tutorial/04_ppo.py      (needs step 02's base policy; builds it when missing)

One call, `train(from_preset("tiny", "airl", init=<base run>))`, runs the whole loop of `minirl/train.py::train_rl`:
  warm-up: `disc_warmup` discriminator steps on the base policy's samples (step 03, in miniature);
  then every iteration:
    1. sample G = 8 completions for each of B = 8 prompts (the RL prompts are corpus problems, never demos);
    2. one discriminator step on 16 experts vs 16 of these samples + perturbed experts (M2, M3);
    3. pay each token r_t = f_t - log pi(y_t|s_t), the `airl` form's logit log D - log(1 - D) (M2);
    4. advantages with the critic-free `group` estimator: normalise within each prompt's group (M4);
    5. PPO: 2 epochs x shuffled minibatches of the clipped surrogate (`minirl/ppo.py::ppo_loss`), grad clip 1.
Read those two functions next to this output: every column printed below is computed there.

It prints the run's settings, a few rows of its training log (discriminator loss, reward, train accuracy,
approx-KL, clip fraction, response length), then the final evaluation beside the base policy's, and saves the
run's figure (`minirl plot` draws the same) as <run>/curves.png when matplotlib is installed.

Exercise: make PPO's trust region tighter. Either set CHANGES = {"clip": 0.05} below (a new run folder is used),
or edit the line `surrogate = torch.max(...)` in `ppo_loss` (e.g. drop the clamp: no trust region at all). Predict
what happens to clip_frac and approx_kl, and to the accuracy, then rerun.
"""

from __future__ import annotations

import json
from dataclasses import replace

from _common import RUNS, ensure_run, fast_overrides, pick, run_folder, save_figure, summary, why_train
from rich.console import Console
from rich.table import Table

from minirl.config import from_preset
from minirl.train import train

CHANGES: dict = {}  # the exercise: e.g. {"clip": 0.05}; any TrainConfig field
console = Console()

# ---------------------------------------------------------------- 1. the run
base_dir = ensure_run("pretrain")
out = run_folder("airl") if not CHANGES else RUNS / ("airl-tiny-" + "-".join(f"{k}{v}" for k, v in CHANGES.items()))
cfg = from_preset("tiny", "airl", init=str(base_dir), out=str(out), **{**fast_overrides(), **CHANGES})
# A finished run is reused only when it was trained with these settings *and* this code: edit a line of
# minirl/ppo.py and the run is trained again, so you see the numbers of your change. (`why_train` says why not:
# missing, unfinished, or what differs; a folder that holds no run of this tutorial stops the step in one line.)
changed = why_train(out, cfg, code=True)
if not changed:
    print(f"reusing the finished run in {out} (same settings and code)")
else:
    print(f"training {out} ({changed})")
    cfg = replace(cfg, overwrite=True)
print(f"AIRL from {cfg.init}: {cfg.steps} iterations x {cfg.prompts_per_iter} prompts x {cfg.samples_per_prompt} "
      f"samples; PPO clip {cfg.clip}, {cfg.ppo_epochs} epochs, minibatch {cfg.minibatch_size}, lr {cfg.lr}, "
      f"advantage {cfg.advantage!r} (gamma {cfg.gamma}), KL beta {cfg.kl_beta}")
print(f"discriminator: {cfg.head!r} head, {cfg.form!r} form, lr {cfg.disc_lr}, {cfg.disc_warmup} warm-up steps, "
      f"{cfg.disc_batch} experts per step, reward clip {cfg.reward_clip}")
# train() keeps the best policy by held-out sampled accuracy (M9: AIRL decays after its peak) and returns the
# final evaluation of it, also written to summary.json.
result = train(cfg) if cfg.overwrite else summary(out)

# ---------------------------------------------------------------- 2. what the loop logged
# metrics.jsonl holds one JSON object per warm-up step, per iteration and per evaluation. Healthy AIRL here
# (M9): the discriminator's loss stays near 0.67-0.69 (neither side wins), response length stays steady (no
# reward hacking by length or EOS), and approx_kl and clip_frac stay small (PPO steps stay inside the clip).
logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
iters = [m for m in logged if "iter" in m]
every = pick(10, 1)
log = Table(title=f"training log ({out / 'metrics.jsonl'}, every {every} iterations)")
columns = {"iter": "iter", "disc_loss": "D loss", "reward_per_seq": "reward/trace", "train_acc": "train acc",
           "approx_kl": "approx KL", "clip_frac": "clip frac", "response_len": "length"}
for name in columns.values():
    log.add_column(name, justify="right")
for m in iters:
    if m["iter"] % every == 0 or m["iter"] == 1:
        log.add_row(*(str(m[c]) if c == "iter" else f"{m[c]:.3g}" for c in columns))
console.print(log)
# All of metrics.jsonl in one picture, the same as `minirl plot <run>`: held-out accuracy and AUROC, the
# discriminator's accuracy per source (warm-up, then one step per iteration), reward, KL, clip fraction, entropy,
# length; and the final reward of right vs wrong samples beside the policy's log-prob.
save_figure([out], out / "curves.png")

# ---------------------------------------------------------------- 3. AIRL vs the base policy
# Same held-out problems, same k samples each. bo{k}_reward: best-of-k by the final reward model's mean token
# reward (step 05 does this at N = 16); reward_auroc: its within-question AUROC (M7). The base run has no
# reward model, so those rows are blank for it.
base = summary(base_dir)
k = next(key for key in base if key.startswith("pass@")).split("@")[1]
rows = ["greedy_acc", "sampled_acc", f"pass@{k}", f"maj@{k}", f"bo{k}_logprob", "logprob_auroc", f"bo{k}_reward",
        "reward_auroc", "s_sample_per_iter", "s_score_per_iter", "s_update_per_iter"]
table = Table(title=f"held-out evaluation ({result['questions']} questions x {k} samples)")
for column in ("figure", "base policy", "AIRL"):
    table.add_column(column, justify="left" if column == "figure" else "right")
for key in rows:
    table.add_row(key, *(f"{s[key]:.3f}" if key in s else "" for s in (base, result)))
console.print(table)
print(f"sampled accuracy: base {base['sampled_acc']:.3f} -> AIRL {result['sampled_acc']:.3f}; "
      f"greedy: {base['greedy_acc']:.3f} -> {result['greedy_acc']:.3f}")

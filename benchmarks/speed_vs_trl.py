"""minirl's outcome-RL iteration against TRL's GRPOTrainer step at equal work (issue #17, docs/speed.md).

Both sides start from the same base policy and do, per step: 8 prompts x 8 samples = 64 completions of at most 96
new tokens at temperature 1 (no top-p, no top-k), reward 1 for a right final answer (`data.is_correct` against the
task's gold), group-normalised advantages, no KL, and one AdamW step (lr 1e-4) on all 64 completions, fp32.
  minirl: `train.rl_iteration` with `--algo outcome --ppo-epochs 1 --minibatch-size 64 --kl-beta 0`
  TRL:    GRPOTrainer with num_generations=8, per_device_train_batch_size=64, steps_per_generation=1,
          num_iterations=1, beta=0, max_completion_length=96, bf16=False, use_cpu
The two alternate in one process: a TRL callback runs one minirl iteration after each TRL step, so both see the
same machine load. The first step of each is dropped (start-up); the medians of the rest are reported.

Run:  python benchmarks/speed_vs_trl.py --base runs/base-tiny-s0        (~1 min on 2 quiet cores)
      python benchmarks/speed_vs_trl.py --base runs/quick --pretrain-steps 100   (builds a small base first)
Prints one JSON line: both medians, their ratio (TRL / minirl, above 1 when minirl is faster), minirl's split
(sample / score / update), and the mean completion length of each side. Needs the bench extra (trl).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import typer

from minirl import runs
from minirl.config import TrainConfig, config_from, from_preset
from minirl.data import format_prompt, is_correct, synthetic_tasks
from minirl.models import load_lm
from minirl.train import make_optimizers, rl_iteration, train

PROMPTS, SAMPLES, MAX_NEW, LR = 8, 8, 96, 1e-4


def base_policy(base: Path, pretrain_steps: int) -> Path:
    """The base policy's run folder: `base` when it holds a policy, else a tiny-preset pretraining of
    `pretrain_steps` steps written there (fewer than the preset's 600: a weaker but equally shaped policy)."""
    if (base / "policy").is_dir():
        return base
    runs.console.print(f"[yellow]no policy in {base}: pretraining one for {pretrain_steps} steps[/]")
    train(from_preset("tiny", "pretrain", steps=pretrain_steps, eval_every=pretrain_steps, final_questions=20,
                      eval_questions=20, out=str(base), overwrite=True))
    return base


def main(base: Path = typer.Option(Path("runs/base-tiny-s0"), help="base policy: a tiny-preset pretraining run"),
         pretrain_steps: int = typer.Option(150, help="when --base holds no policy: pretrain one this long first"),
         iters: int = typer.Option(10, help="steps of each side after the first (dropped)"),
         threads: int = typer.Option(0, help="torch threads (0: torch's default); 1 on a machine shared with other "
                                             "work, where 2 threads wait on each other and times blow up ~10x"),
         seed: int = typer.Option(0)):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if threads:
        torch.set_num_threads(threads)
    base = base_policy(base, pretrain_steps)
    cfg = minirl_config(base, iters, seed)
    data = synthetic_tasks(seed, n_corpus=cfg.n_corpus, misconception_rate=cfg.misconception_rate)
    torch.manual_seed(seed)
    policy, tokenizer = load_lm(str(base))  # minirl's copy
    trl_policy, _ = load_lm(str(base))  # TRL's copy
    optimizers = make_optimizers(cfg, policy, None, None)

    def correctness(prompts, completions, answer, **kwargs) -> list[float]:
        return [float(is_correct(c, a)) for c, a in zip(completions, answer)]

    dataset = Dataset.from_list([{"prompt": format_prompt(t["question"], tokenizer), "answer": t["answer"]}
                                 for t in data["rl"][:4000]])
    times = {"trl": [], "minirl": [], "s_sample": [], "s_score": [], "s_update": []}
    lengths = {"trl": [], "minirl": []}
    ratio_first = []

    class Interleave(TrainerCallback):
        """Times each TRL step, then runs one minirl iteration (timed the same way) before the next TRL step."""

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times["trl"].append(time.perf_counter() - self.t0)
            it = len(times["minirl"])
            t0 = time.perf_counter()
            stats = rl_iteration(cfg, it, policy, tokenizer, data, optimizers)
            times["minirl"].append(time.perf_counter() - t0)
            for k in ("s_sample", "s_score", "s_update"):
                times[k].append(stats[k])
            lengths["minirl"].append(stats["response_len"])
            ratio_first.append(stats["ratio_first"])

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths["trl"].append(logs["completions/mean_length"])

    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(output_dir=tmp, num_generations=SAMPLES, per_device_train_batch_size=PROMPTS * SAMPLES,
                          gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, beta=0.0,
                          max_completion_length=MAX_NEW, temperature=1.0, top_p=1.0, top_k=0, learning_rate=LR,
                          max_steps=iters + 1, use_cpu=True, bf16=False, logging_steps=1, report_to="none",
                          save_strategy="no", seed=seed, disable_tqdm=True)
        trainer = GRPOTrainer(model=trl_policy, reward_funcs=correctness, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Interleave()])
        trainer.train()

    print(json.dumps({**summary(times, lengths, ratio_first), "iters": iters, "base": str(base),
                      "threads": torch.get_num_threads()}))


def minirl_config(base: Path, iters: int, seed: int) -> TrainConfig:
    """minirl's side of the equal work: the tiny preset's outcome RL from `base`, with TRL's settings above."""
    saved = config_from(json.loads((base / "config.json").read_text()))
    return from_preset("tiny", "outcome", init=str(base), seed=seed, steps=iters + 1, prompts_per_iter=PROMPTS,
                       samples_per_prompt=SAMPLES, max_new_tokens=MAX_NEW, ppo_epochs=1, minibatch_size=64,
                       kl_beta=0.0, lr=LR, temperature=1.0, top_p=1.0, precision="fp32", n_corpus=saved.n_corpus,
                       misconception_rate=saved.misconception_rate)


def summary(times: dict[str, list[float]], lengths: dict[str, list[float]], ratio_first: list[float]) -> dict:
    """Medians of each side's step times (the first step dropped), minirl's split, the completion lengths, and a
    warning when the two sides generated lengths too different for the times to compare."""
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    mean_len = {k: statistics.mean(v[1:]) for k, v in lengths.items() if len(v) > 1}
    result = {"trl_step_s": round(med["trl"], 4), "minirl_iter_s": round(med["minirl"], 4),
              "speedup": round(med["trl"] / med["minirl"], 3),
              "minirl_split_s": {k[2:]: round(med[k], 4) for k in ("s_sample", "s_score", "s_update")},
              "mean_completion_len": {k: round(v, 1) for k, v in mean_len.items()},
              "ratio_first_max_error": max(abs(r - 1) for r in ratio_first)}
    if len(mean_len) == 2 and abs(mean_len["trl"] - mean_len["minirl"]) > 0.15 * max(mean_len.values()):
        result["warning"] = "the two sides generated completions of different lengths: the times are not comparable"
    return result


if __name__ == "__main__":
    typer.run(main)

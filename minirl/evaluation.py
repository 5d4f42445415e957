"""Evaluations around a training loop: on validation problems while training, keeping the best policy (M9:
AIRL can decay after its peak), and once at the end on the held-out test problems, which write summary.json,
the saved policy/ and reward/ and their model cards. The test problems never choose a checkpoint.
"""

from __future__ import annotations

from rich.console import Console

from minirl import folders, runs
from minirl.cards import write_model_card
from minirl.config import TrainConfig
from minirl.models import load_lm, pick_device, save_lm
from minirl.rerank import evaluate
from minirl.tables import summary_table


def evaluate_and_keep_best(cfg: TrainConfig, run: runs.Run, step: int, best_acc: float, best_step: int, policy,
                           tokenizer, valid: list[dict], reward_model=None) -> tuple[float, int]:
    """Evaluation on the validation problems, never test ones; the policy is saved to policy/ when it beats
    `best_acc` (M9: AIRL can decay after its peak). Returns the best accuracy so far and its step."""
    figures = evaluate(cfg, policy, tokenizer, valid, reward_model)  # load_tasks drew `eval_questions` of them
    if figures["sampled_acc"] > best_acc:
        best_acc, best_step = figures["sampled_acc"], step
        runs.require_finite(policy, "the policy")
        save_lm(policy, tokenizer, run.folder / "policy")
    run.log({"eval_step": step, **figures, "best_sampled_acc": best_acc, "best_step": best_step})
    runs.console.print(f"step {step}: " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items() if k != "questions"))
    return best_acc, best_step


def finish(cfg: TrainConfig, run: runs.Run, policy, tokenizer, test: list[dict], reward_model=None,
           best_step: int | None = None) -> dict:
    """Final evaluation of the best checkpoint (step `best_step`) on `final_questions`; summary.json, a table."""
    if (run.folder / "policy").exists():  # the best checkpoint, as a plain (LoRA-merged) model
        device, dtype = pick_device()
        policy = load_lm(str(run.folder / "policy"), dtype=dtype)[0].to(device)
    else:  # no evaluation happened (e.g. --steps 0: the reward model alone was trained)
        runs.require_finite(policy, "the policy")
        save_lm(policy, tokenizer, run.folder / "policy")
    if reward_model is not None:
        runs.require_finite(reward_model, "the reward model")
        reward_model.save(run.folder / "reward", tokenizer)
    figures = evaluate(cfg, policy, tokenizer, test[: cfg.final_questions], reward_model,
                       run.folder / "eval_samples.jsonl", progress=runs.console.is_terminal)
    summary = runs.write_summary(run, {**figures, "best_step": best_step})
    for kind in ("policy", "reward") if reward_model is not None else ("policy",):
        write_model_card(run.folder / kind, kind, folders.saved_config(run.folder), summary)
    Console().print(summary_table(summary, f"{cfg.algo} · {run.folder}"))
    if best_step == 0 and cfg.steps > 0:
        runs.console.print("[yellow]training never beat the starting policy on the validation problems: policy/ "
                           "is the starting policy (step 0)[/]")
    return summary

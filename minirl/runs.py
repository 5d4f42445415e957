"""Run folders: data and model set-up, evaluation, checkpoints, resume and the live view.

Everything here is bookkeeping around the loops in `minirl.train`, kept apart so that the
loops read as algorithms. A run folder holds:
  config.json, metrics.jsonl (one JSON object per logged step), summary.json,
  policy/ (best checkpoint by held-out sampled accuracy), reward/ (AIRL's reward model),
  checkpoint/ (the latest state with optimisers, for --resume), eval_samples.jsonl.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer

from minirl.airl import discriminator_step, negatives
from minirl.config import TrainConfig, from_preset
from minirl.data import DataError, format_prompt, is_correct, load_gsm8k, strip_calculator, synthetic_tasks
from minirl.models import (
    ModelError,
    RewardModel,
    add_lora,
    build_tiny_lm,
    build_tokenizer,
    check_same_tokenizer,
    load_lm,
    pick_device,
    save_lm,
)
from minirl.rerank import by_kind, rerank_table, sample_and_score, save_records
from minirl.rollout import sample

console = Console(stderr=True)
SHOWN = ("loss", "disc_loss", "reward_per_seq", "train_acc", "approx_kl", "clip_frac", "response_len", "sampled_acc")


@dataclass
class Run:
    folder: Path
    started: float
    last: dict  # the latest logged values, for the live view

    def log(self, stats: dict) -> None:
        self.last.update(stats)
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(stats) + "\n")

    def progress(self, steps: range, desc: str):
        """Iterate `steps` under a rich progress bar showing the latest metrics."""
        bar = Progress(TextColumn(f"[bold]{desc}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[info]}"), console=console, transient=False)
        with bar:
            task = bar.add_task(desc, total=steps.stop, completed=steps.start, info="")
            for step in steps:
                yield step
                info = "  ".join(f"{k} {self.last[k]:.3g}" for k in SHOWN if k in self.last)
                bar.update(task, advance=1, info=info)


def start(folder: Path, cfg: TrainConfig) -> Run:
    if folder.exists() and (folder / "summary.json").exists() and not cfg.resume:
        raise DataError(f"{folder} already holds a finished run; choose another --out or delete it")
    folder.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        (folder / "metrics.jsonl").write_text("")
    (folder / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    console.print(f"run folder: [bold]{folder}[/]  ({cfg.algo}, preset {cfg.preset}, seed {cfg.seed})")
    return Run(folder, time.time(), {})


# ---------------------------------------------------------------- data and models


def load_data(cfg: TrainConfig) -> dict[str, list[dict]]:
    """{"demos", "rl", "test"} (+ "corpus" for the synthetic world). RL prompts are never
    demonstration problems, or AIRL turns into disguised imitation (issue 3, M9)."""
    if cfg.data == "synthetic":
        return synthetic_tasks(cfg.seed, n_demos=cfg.n_demos, n_corpus=cfg.n_corpus,
                               misconception_rate=cfg.misconception_rate, leave_out=cfg.leave_out or None)
    train = load_gsm8k(str(Path(cfg.data).expanduser()))
    random.Random(cfg.seed).shuffle(train)
    if cfg.test_data:
        test = load_gsm8k(str(Path(cfg.test_data).expanduser()))
    else:  # hold out the tail of the shuffled training set
        train, test = train[: -cfg.final_questions], train[-cfg.final_questions:]
    if not cfg.calculator_annotations:
        train, test = ([{**t, "answer": strip_calculator(t["answer"])} for t in part] for part in (train, test))
    return {"demos": train[: cfg.n_demos], "rl": train[cfg.n_demos:] or train, "test": test, "corpus": train}


def load_policy(cfg: TrainConfig, data: dict):
    device, dtype = pick_device()
    torch.manual_seed(cfg.seed)
    if cfg.init:
        policy, tokenizer = load_lm(str(Path(cfg.init).expanduser()), cfg.gguf_file or None, dtype)
    elif cfg.data == "synthetic":  # a fresh tiny model, with a tokenizer fitted on the world's text
        texts = [t["question"] + "\n" + t["answer"] for t in data["corpus"][:5000] + data["demos"]]
        tokenizer = build_tokenizer(texts)
        policy = build_tiny_lm(tokenizer, cfg.size, cfg.seed)
    else:
        raise ModelError("give --init: a model to start from (hub id, local folder or .gguf file)")
    if cfg.grad_checkpointing:  # transformers 5 renamed it "activation checkpointing"
        getattr(policy, "activation_checkpointing_enable", policy.gradient_checkpointing_enable)()
    if cfg.lora_rank > 0:
        policy = add_lora(policy, cfg.lora_rank)
    return policy.to(device), tokenizer


def default_out(cfg: TrainConfig) -> Path:
    """runs/<algo>-<preset>-s<seed>; the tiny preset's pretraining run is the base policy that
    the other algorithms start from, runs/base-<size>-s<seed>."""
    if cfg.algo == "pretrain" and cfg.preset == "tiny":
        return Path(f"runs/base-{cfg.size}-s{cfg.seed}")
    return Path(f"runs/{cfg.algo}-{cfg.preset}-s{cfg.seed}")


def ensure_base_policy(cfg: TrainConfig) -> str:
    """The tiny preset's base policy (pretrained on the misconception corpus): reuse it when
    present, build it otherwise. Stands in for the paper's off-the-shelf instruct model."""
    folder = default_out(replace(cfg, algo="pretrain", preset="tiny"))
    if not (folder / "summary.json").exists():
        console.print(f"[yellow]no base policy at {folder}: pretraining it first (a few minutes)[/]")
        from minirl.train import train

        base = from_preset("tiny", algo="pretrain", out=str(folder), seed=cfg.seed, size=cfg.size,
                           n_corpus=cfg.n_corpus, misconception_rate=cfg.misconception_rate)
        train(base)
    return str(folder)


def load_run(folder: str | Path, reward_from: str | Path | None = None):
    """(policy, tokenizer, reward model or None, config dict) of a finished run folder; the
    reward model may come from another run (`reward_from`)."""
    folder = Path(folder)
    if not (folder / "policy").is_dir():
        raise DataError(f"{folder}: not a minirl run folder (no policy/ inside)")
    device, dtype = pick_device()
    policy, tokenizer = load_lm(str(folder / "policy"), dtype=dtype)
    reward_dir = Path(reward_from) / "reward" if reward_from else folder / "reward"
    if reward_from and not reward_dir.is_dir():
        raise DataError(f"{reward_from}: no reward model in that run (no reward/ inside)")
    reward_model = RewardModel.load(reward_dir, dtype).to(device) if reward_dir.is_dir() else None
    if reward_from:
        check_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(str(reward_dir / "backbone")))
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    return policy.to(device).eval(), tokenizer, reward_model, config


def frozen_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def load_reward_model(cfg: TrainConfig, policy, tokenizer) -> RewardModel:
    """M2: a copy of the policy's weights, or its own backbone (`reward_init`)."""
    if not cfg.reward_init:
        lm = copy.deepcopy(policy)
    else:
        lm, reward_tokenizer = load_lm(str(Path(cfg.reward_init).expanduser()), dtype=pick_device()[1])
        check_same_tokenizer(tokenizer, reward_tokenizer)
    return RewardModel(lm.train(), cfg.head)


def warm_up_discriminator(cfg: TrainConfig, run: Run, reward_model, optimizer, policy, tokenizer, demos) -> None:
    """M2 before PPO: `disc_warmup` steps on experts vs the starting policy's own samples of
    the demonstration problems (identical ones dropped) and perturbed experts."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    pool_tasks = demos[: cfg.warmup_pool]
    pool = []
    for i in range(0, len(pool_tasks), 64):  # 4 samples per problem
        chunk = [t for t in pool_tasks[i: i + 64] for _ in range(4)]
        batch = sample(policy, tokenizer, [format_prompt(t["question"], tokenizer) for t in chunk],
                       cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        pool += [(t["question"], x) for t, x in zip(chunk, batch.texts(tokenizer))]
    own, _ = negatives(demos, pool, 0, rng)  # drop samples identical to their demonstration (M9)
    for step in run.progress(range(cfg.disc_warmup), "discriminator warm-up"):
        experts = rng.sample(demos, cfg.disc_batch)
        _, perturbed = negatives(experts, [], cfg.perturbed_per_expert, rng)
        stats = discriminator_step(reward_model, optimizer, policy, tokenizer, experts,
                                   rng.sample(own, min(len(own), cfg.disc_batch)), perturbed, cfg.form,
                                   cfg.label_smoothing)
        run.log({"warmup_step": step + 1, **stats})


# ---------------------------------------------------------------- evaluation


def evaluate(cfg: TrainConfig, policy, tokenizer, test: list[dict], n_questions: int,
             reward_model: RewardModel | None = None, records_path: Path | None = None) -> dict:
    """Held-out figures: greedy and sampled accuracy, pass@k, maj@k, best-of-k by reward
    and by log-prob beside the random pick, and AUROCs against correctness (M5, M7)."""
    torch.manual_seed(cfg.seed + 12345)
    tasks, k = test[:n_questions], cfg.eval_samples
    policy.eval()
    greedy_right = 0
    for i in range(0, len(tasks), cfg.eval_batch):
        chunk = tasks[i: i + cfg.eval_batch]
        batch = sample(policy, tokenizer, [format_prompt(t["question"], tokenizer) for t in chunk],
                       cfg.max_new_tokens, temperature=0.0)
        greedy_right += sum(is_correct(x, t["answer"]) for x, t in zip(batch.texts(tokenizer), chunk))
    records = sample_and_score(policy, tokenizer, tasks, k, cfg.max_new_tokens, reward_model, cfg.temperature,
                               cfg.top_p, batch_size=cfg.eval_batch, progress=console.is_terminal)
    if records_path is not None:
        save_records(records, records_path)
    table = rerank_table(records, ks=(1, k))
    out = {"greedy_acc": greedy_right / len(tasks), "sampled_acc": table["random"]["success@1"],
           f"pass@{k}": table["pass@k"][f"pass@{k}"], f"maj@{k}": table["majority"]["success@1"],
           f"bo{k}_random": table["random"]["success@1"], f"bo{k}_logprob": table["logprob"]["success@1"],
           "logprob_auroc": table["logprob"]["auroc"], "questions": len(tasks)}
    if "mean" in table:
        out.update({f"bo{k}_reward": table["mean"]["success@1"], "reward_auroc": table["mean"]["auroc"],
                    "reward_auroc_pooled": table["mean"]["auroc_pooled"]})
    if records_path is not None and records[0].get("kind"):  # the final evaluation: per problem kind
        out["by_kind"] = by_kind(records)
    return out


def evaluate_and_checkpoint(run: Run, cfg: TrainConfig, step: int, policy, tokenizer, test, optimizers: dict,
                            reward_model=None, value_head=None) -> None:
    figures = evaluate(cfg, policy, tokenizer, test, cfg.eval_questions, reward_model)
    best = run.last.get("best_sampled_acc", -1.0)
    if figures["sampled_acc"] > best:  # keep the best policy by held-out accuracy (M9)
        best = figures["sampled_acc"]
        save_lm(policy, tokenizer, run.folder / "policy")
    run.log({"eval_step": step, **figures, "best_sampled_acc": best})
    console.print(f"step {step}: " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items() if k != "questions"))
    ckpt = run.folder / "checkpoint"
    save_lm(policy, tokenizer, ckpt / "policy")
    if reward_model is not None:
        reward_model.save(ckpt / "reward", tokenizer)
    if value_head is not None:
        save_file(value_head.state_dict(), ckpt / "value_head.safetensors")
    torch.save({k: o.state_dict() for k, o in optimizers.items()}, ckpt / "optim.pt")
    (ckpt / "state.json").write_text(json.dumps({"step": step, "best_sampled_acc": best}))


def resume(run: Run, cfg: TrainConfig, policy, tokenizer, optimizers: dict, reward_model=None,
           value_head=None) -> int:
    """Load the latest checkpoint into the live objects; returns the step to continue from."""
    ckpt = run.folder / "checkpoint"
    if not cfg.resume:
        return 0
    if not (ckpt / "state.json").exists():
        raise DataError(f"--resume: no checkpoint in {run.folder}")
    if cfg.lora_rank > 0:
        raise DataError("--resume is not supported with --lora-rank yet (checkpoints hold merged weights)")
    state = json.loads((ckpt / "state.json").read_text())
    policy.load_state_dict(load_lm(str(ckpt / "policy"))[0].state_dict())
    if reward_model is not None:
        reward_model.load_state_dict(RewardModel.load(ckpt / "reward").state_dict())
    if value_head is not None:
        value_head.load_state_dict(load_file(ckpt / "value_head.safetensors"))
    for k, state_dict in torch.load(ckpt / "optim.pt", weights_only=False).items():
        optimizers[k].load_state_dict(state_dict)
    run.last["best_sampled_acc"] = state["best_sampled_acc"]
    console.print(f"resuming from step {state['step']}")
    return state["step"]


def finish(run: Run, cfg: TrainConfig, policy, tokenizer, test, reward_model=None) -> dict:
    """Final evaluation of the best checkpoint on `final_questions`; summary.json and a table."""
    if (run.folder / "policy").exists():  # the best checkpoint, as a plain (LoRA-merged) model
        policy = load_lm(str(run.folder / "policy"), dtype=pick_device()[1])[0].to(pick_device()[0])
    else:  # no evaluation happened (e.g. --steps 0: the reward model alone was trained)
        save_lm(policy, tokenizer, run.folder / "policy")
    if reward_model is not None:
        reward_model.save(run.folder / "reward", tokenizer)
    summary = evaluate(cfg, policy, tokenizer, test, cfg.final_questions, reward_model,
                       run.folder / "eval_samples.jsonl")
    steps = [json.loads(x) for x in (run.folder / "metrics.jsonl").read_text().splitlines() if '"s_sample"' in x]
    for key in ("s_sample", "s_score", "s_update"):
        if steps:
            summary[key + "_per_iter"] = sum(s[key] for s in steps) / len(steps)
    summary["wall_s"] = round(time.time() - run.started, 1)  # the final evaluation included
    (run.folder / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=f"{cfg.algo} · {run.folder}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        if not isinstance(v, dict):
            table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)
    return summary


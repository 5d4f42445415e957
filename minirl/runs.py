"""Run folders: start, log, checkpoint, resume and load. File I/O only; the loops live in `minirl.train`.

A run folder holds:
  config.json      the TrainConfig, its hash and the minirl version (a folder is never reused under other settings)
  metrics.jsonl    one JSON object per logged step (warm-up steps, iterations, evaluations)
  tensorboard/     the same numbers as tensorboard events, with --report-to tensorboard (tags "iter/approx_kl",
                   "eval_step/sampled_acc", ...; after --resume the steps past the checkpoint appear twice there)
  summary.json     the final held-out evaluation
  policy/          the best policy by sampled accuracy on validation problems (never test ones); reward/ the
                   reward model (AIRL); each with a model card README.md (`write_model_card`)
  checkpoint-N/    the latest complete checkpoint (weights, optimiser states, state.json)
  checkpoint.json  names that folder; written last, by an atomic rename, so a crash mid-write leaves the
                   previous checkpoint in force
Everything in a run folder is data: weights as safetensors, optimiser states loaded with
`torch.load(weights_only=True)`, JSON for the rest. Loading a run folder never runs code from it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import minirl
from minirl.config import NumericalError, TrainConfig
from minirl.folders import (
    RunError,
    check_folder,
    code_hash,
    config_hash,
    data_hash,
    last_checkpoint,
    lock,
    read_json_object,
    saved_config,
)
from minirl.models import RewardModel, check_same_tokenizer, load_lm, load_tokenizer, pick_device, save_lm

console = Console(stderr=True)
SHOWN = ("loss", "disc_loss", "reward_per_seq", "train_acc", "approx_kl", "clip_frac", "response_len", "sampled_acc")
STEP_KEYS = ("iter", "eval_step", "warmup_step", "step")  # what each kind of metrics.jsonl row counts
ARTEFACTS = ("policy", "reward", "summary.json", "eval_samples.jsonl", "checkpoint.json",
             "tensorboard")  # what a fresh start clears
# Checked at every logged step (SFT step, discriminator step, PPO iteration): a NaN or inf here stops the run.
MUST_BE_FINITE = ("loss", "grad_norm", "disc_loss", "disc_grad_norm", "reward_per_seq", "value_loss", "approx_kl",
                  "ratio", "entropy", "kl_ref")


@dataclass
class Run:
    folder: Path
    started: float
    last: dict  # the latest logged values, for the live view
    tensorboard: object | None = None  # a SummaryWriter with --report-to tensorboard
    at: str = "the start"  # where training is, for messages: "airl step 3", "discriminator warm-up step 2"

    def log(self, stats: dict) -> None:
        """Append `stats` to metrics.jsonl; a non-finite loss, reward or gradient norm stops the run."""
        self.last.update(stats)
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(finite_or_none(stats)) + "\n")
        for key in MUST_BE_FINITE:
            if isinstance(stats.get(key), float) and not math.isfinite(stats[key]):
                raise NumericalError(f"{key} is {stats[key]}")
        step = next((k for k in STEP_KEYS if k in stats), None)
        if self.tensorboard is not None and step is not None:  # the same numbers, tagged by the kind of row
            for key, value in stats.items():
                if key != step and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(f"{step}/{key}", value, stats[step])
            self.tensorboard.flush()

    def progress(self, steps: range, desc: str):
        """Iterate `steps` under a rich progress bar showing the latest metrics."""
        bar = Progress(TextColumn(f"[bold]{desc}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[info]}"), console=console, transient=False)
        with bar:
            task = bar.add_task(desc, total=steps.stop, completed=steps.start, info="")
            for step in steps:
                self.at = f"{desc} step {step + 1}"
                yield step
                info = "  ".join(f"{k} {self.last[k]:.3g}" for k in SHOWN if k in self.last)
                bar.update(task, advance=1, info=info)


def finite_or_none(values: dict) -> dict:
    """JSON has no NaN: a non-finite float is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


# ---------------------------------------------------------------- one process per run folder


def start(folder: Path, cfg: TrainConfig) -> Run:
    """Check, claim and prepare the run folder; the caller calls `unlock(folder)` when training ends."""
    check_folder(folder, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    lock(folder)
    record = {**asdict(cfg), "config_hash": config_hash(cfg), "code_hash": code_hash(), "data_hash": data_hash(cfg),
              "minirl_version": minirl.__version__}
    write_atomic(folder / "config.json", json.dumps(record, indent=2))  # first: the folder is a run's from now on
    if not cfg.resume:  # a fresh start: nothing of an earlier attempt may leak into this run
        for path in [*(folder / name for name in ARTEFACTS), *folder.glob("checkpoint-*")]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        (folder / "metrics.jsonl").write_text("")
    console.print(f"run folder: [bold]{folder}[/]  ({cfg.algo}, preset {cfg.preset}, seed {cfg.seed})")
    return Run(folder, time.time(), {}, tensorboard_writer(folder) if cfg.report_to == "tensorboard" else None)


def tensorboard_writer(folder: Path):
    """A SummaryWriter into `folder`/tensorboard (config.check has made sure that tensorboard is installed)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder / "tensorboard"))


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file, then one rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(run: Run, step: int, best_sampled_acc: float, best_step: int, policy, tokenizer, optimizers: dict,
                    reward_model: RewardModel | None = None, value_head: nn.Module | None = None) -> None:
    """Everything --resume needs, in a new folder checkpoint-<step>/; checkpoint.json is switched to it last,
    by an atomic rename, and only then are older checkpoint folders removed."""
    name = f"checkpoint-{step:06d}"
    ckpt = run.folder / name
    for module, what in ((policy, "the policy"), (reward_model, "the reward model"), (value_head, "the value head")):
        require_finite(module, what)
    shutil.rmtree(ckpt, ignore_errors=True)  # a half-written folder of a crashed attempt at this step
    save_lm(policy, tokenizer, ckpt / "policy")
    if reward_model is not None:
        reward_model.save(ckpt / "reward", tokenizer)
    if value_head is not None:
        save_file(value_head.state_dict(), ckpt / "value_head.safetensors")
    torch.save({k: o.state_dict() for k, o in optimizers.items()}, ckpt / "optim.pt")
    n_logged = len((run.folder / "metrics.jsonl").read_text().splitlines())
    write_atomic(run.folder / "checkpoint.json", json.dumps(
        {"folder": name, "step": step, "best_sampled_acc": best_sampled_acc, "best_step": best_step,
         "metrics_lines": n_logged}))
    for old in run.folder.glob("checkpoint-*"):
        if old.name != name:
            shutil.rmtree(old)


def resume(run: Run, cfg: TrainConfig, policy, optimizers: dict, reward_model=None,
           value_head=None) -> tuple[int, float, int]:
    """Load the latest checkpoint into the live objects; returns (step to continue from, best sampled accuracy
    so far, its step). metrics.jsonl is cut back to what was logged at that checkpoint."""
    if not cfg.resume:
        return 0, -1.0, 0
    try:
        state = checkpoint_state(run.folder)
        ckpt = run.folder / state["folder"]
        policy.load_state_dict(load_lm(str(ckpt / "policy"))[0].state_dict())
        if reward_model is not None:
            reward_model.load_state_dict(RewardModel.load(ckpt / "reward").state_dict())
        if value_head is not None:
            value_head.load_state_dict(load_file(ckpt / "value_head.safetensors"))
        for k, state_dict in torch.load(ckpt / "optim.pt", weights_only=True).items():
            optimizers[k].load_state_dict(state_dict)
    except pickle.UnpicklingError:  # weights_only refused a pickle that would build objects (and could run code)
        raise RunError(f"--resume: {ckpt / 'optim.pt'} holds more than tensors; refused to load it") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, EOFError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__  # Type/AttributeError: optim.pt not dicts
        raise RunError(f"--resume: the checkpoint in {run.folder} cannot be loaded ({reason})") from None
    lines = (run.folder / "metrics.jsonl").read_text().splitlines()[: state["metrics_lines"]]
    (run.folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    console.print(f"resuming from step {state['step']}")
    return state["step"], state["best_sampled_acc"], state["best_step"]


def checkpoint_state(folder: Path) -> dict:
    """checkpoint.json as `save_checkpoint` writes it; anything else is a ValueError saying what is wrong."""
    state = json.loads((folder / "checkpoint.json").read_text())
    kinds = {"folder": str, "step": int, "best_sampled_acc": (int, float), "best_step": int, "metrics_lines": int}
    if not isinstance(state, dict):
        raise ValueError("checkpoint.json is not a JSON object")
    for key, kind in kinds.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise ValueError(f"checkpoint.json: {key} {value!r} is not what a checkpoint holds")
    if not state["folder"].startswith("checkpoint-") or "/" in state["folder"]:
        raise ValueError(f"checkpoint.json: folder {state['folder']!r} is not a checkpoint-N folder")
    return state


def require_finite(module: nn.Module | None, what: str) -> None:
    """A diverged model is never saved: refuse weights holding NaN or inf."""
    if module is not None and not all(torch.isfinite(v).all() for v in module.state_dict().values()):
        raise NumericalError(f"{what} has non-finite weights (NaN or inf)")


def stopped(run: Run, error: NumericalError) -> NumericalError:
    """The one line a diverged run stops with: where, what, and what was kept."""
    step = last_checkpoint(run.folder)
    kept = f"the checkpoint of step {step} is kept" if step is not None else "no checkpoint was written"
    return NumericalError(f"{run.at}: {error}; training stopped, {kept}, nothing non-finite saved "
                          "(a lower --lr or --disc-lr may help)")


def write_summary(run: Run, summary: dict) -> dict:
    """summary.json, with the mean seconds per iteration from metrics.jsonl and the wall time."""
    steps = []
    for line in (run.folder / "metrics.jsonl").read_text().splitlines():
        try:  # a line cut short by an earlier crash is left out of the means, not a crash of this run
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in ("s_sample", "s_score",
                                                                                           "s_update")):
            steps.append(row)
    for key in ("s_sample", "s_score", "s_update"):
        if steps:
            summary[key + "_per_iter"] = sum(s[key] for s in steps) / len(steps)
    summary["wall_s"] = round(time.time() - run.started, 1)  # the final evaluation included
    write_atomic(run.folder / "summary.json", json.dumps(finite_or_none(summary), indent=2))
    return summary


# ---------------------------------------------------------------- finished runs


def load_run(folder: str | Path, reward_from: str | Path | None = None):
    """(policy, tokenizer, reward model or None, config dict) of a finished run folder; the
    reward model may come from another run (`reward_from`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: {'a file, not a run folder' if folder.exists() else 'no such run folder'}")
    if not (folder / "policy").is_dir():
        saved = read_json_object(folder / "config.json") or {}
        unfinished = "config_hash" in saved and not (folder / "summary.json").exists()  # a minirl run's settings
        raise RunError(f"{folder}: " + ("no policy saved yet (the run stopped before its first evaluation)"
                                        if unfinished else "not a minirl run folder (no policy/ inside)"))
    device, dtype = pick_device()
    policy, tokenizer = load_lm(str(folder / "policy"), dtype=dtype)
    reward_dir = Path(reward_from) / "reward" if reward_from else folder / "reward"
    if reward_from and not reward_dir.is_dir():
        raise RunError(f"{reward_from}: no reward model in that run (no reward/ inside)")
    reward_model = RewardModel.load(reward_dir, dtype).to(device) if reward_dir.is_dir() else None
    if reward_from:
        check_same_tokenizer(tokenizer, load_tokenizer(reward_dir / "backbone"), f"--reward-from {reward_from}")
    config = saved_config(folder) if (folder / "config.json").exists() else {}
    return policy.to(device).eval(), tokenizer, reward_model, config

"""Configuration: one typed dataclass, one help line per field, and named presets.

The CLI (`minirl train`) is built from `TrainConfig`'s fields; a preset is a named set of
overrides, and options given on the command line override the preset.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


class UserError(ValueError):
    """A mistake in what the user asked for (bad option, path or data): printed as one line, exit code 1."""


class UsageError(UserError):
    """An option out of range, an unknown value, or options that do not go together: exit code 2."""


class NumericalError(UserError):
    """Training diverged (a NaN or infinite loss, reward or gradient): the run stops, nothing non-finite saved."""


def opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    algo: str = opt("airl", "what to train (M4, M6; reward: the reward model alone, from a sample pool drawn "
                             "once, M10)")
    preset: str = opt("tiny", "named defaults: tiny (CPU, synthetic world), smollm2 (CPU, GSM8K), gsm8k-qwen0.5b (GPU)")
    out: str = opt("", "run folder to write (default: runs/<algo>-<preset>-s<seed>; tiny pretrain: runs/base-tiny-s0)")
    init: str = opt("", "starting policy: a run folder, a local model folder, a .gguf file or a hub id "
                        "(tiny preset: empty means the base policy runs/base-tiny-s<seed>, built when missing)")
    reward_init: str = opt("", "reward model backbone: empty = a copy of the starting policy (M2), else a path/id")
    reward_size: str = opt("", "tiny preset: the reward model's backbone is a base model of this size pretrained on "
                               "the same corpus (runs/base-<size>-s<seed>, built when missing; small: worse than a "
                               "copy, M9 trial 4); empty = as --reward-init says")
    reward_from: str = opt("", "airl: start from the reward model of this run folder instead, with no warm-up (e.g. "
                               "one trained against the base policy, for AIRL from SFT: M2)")
    data: str = opt("synthetic", "'synthetic' for the miniature world, or GSM8K: a .jsonl file or the split 'train'")
    test_data: str = opt("", "held-out GSM8K problems (.jsonl or 'test'); unused for the synthetic world")
    calculator_annotations: bool = opt(False, "keep GSM8K's <<48/2=24>> annotations in expert traces (a chat policy "
                                              "never writes them, so the discriminator would key on them, M2)")
    seed: int = opt(0, "seed for the world, the model init, sampling and data order")
    resume: bool = opt(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = opt(False, "replace a run in --out that was trained with other settings, or finished")
    report_to: str = opt("", "also log metrics.jsonl's numbers to a tracker: '' (none) or tensorboard "
                             "(into <out>/tensorboard; needs the track extra)")
    # ---- the synthetic world (minirl.world)
    n_demos: int = opt(400, "expert demonstrations (synthetic world)")
    n_corpus: int = opt(20000, "pretraining corpus size, misconceptions included (synthetic world)")
    misconception_rate: float = opt(0.6, "chance that each cued misconception is applied in the corpus (trial: 0.7)")
    leave_out: str = opt("", "a misconception kept out of the demonstrations, e.g. half_as_many")
    # ---- models
    size: str = opt("tiny", "tiny model size: tiny (0.7M parameters), small (3.6M) or micro (tests)")
    gguf_file: str = opt("", "GGUF file name inside --init's folder, for quantised checkpoints")
    lora_rank: int = opt(0, "LoRA rank for policy and reward model (0 = full fine-tuning; needs the peft extra)")
    grad_checkpointing: bool = opt(False, "recompute activations in the backward pass to save GPU memory")
    precision: str = opt("auto", "auto (bf16-mixed on CUDA, fp32 on a CPU) | fp32 | bf16-mixed: fp32 weights and "
                                 "AdamW states, bf16 matmuls in every forward pass (docs/gpu.md)")
    max_new_tokens: int = opt(96, "longest sampled response, in tokens")
    temperature: float = opt(1.0, "sampling temperature; log-probs in training use the same (M4)")
    top_p: float = opt(1.0, "nucleus sampling threshold (M4 paper: 0.95)")
    # ---- budget and batch sizes (the three batch knobs)
    steps: int = opt(120, "optimiser steps (pretrain/sft/reward) or PPO iterations (airl/outcome)")
    prompts_per_iter: int = opt(8, "prompts per iteration (pretrain/sft: examples per step)")
    samples_per_prompt: int = opt(8, "samples per prompt, the group of the `group` estimator (M4; at most 1024)")
    minibatch_size: int = opt(32, "sequences per PPO gradient step")
    micro_batch_size: int = opt(0, "sequences per forward/backward pass: a PPO minibatch, an SFT batch or a "
                                   "discriminator batch is split into chunks this size whose gradients add up to "
                                   "one step (0 = no split; memory, not the result, depends on it)")
    lr: float = opt(2e-4, "policy learning rate (AdamW), decayed linearly to 10% over the run")
    # ---- PPO (M4)
    ppo_epochs: int = opt(2, "passes over each rollout batch (at most 100)")
    clip: float = opt(0.2, "PPO ratio clip epsilon")
    target_kl: float = opt(0.0, "stop an update's epochs once their mean approx-KL exceeds this (0 = never)")
    advantage: str = opt("group", "gae (value head), group (critic-free, the paper's), loo (its leave-one-out "
                                  "variant) or trace (airl: each trace's mean reward as one outcome, M4)")
    gamma: float = opt(1.0, "discount for GAE / reward-to-go (paper's group estimator: 0.9)")
    lam: float = opt(0.95, "GAE lambda")
    kl_beta: float = opt(0.0, "per-token KL penalty to the starting policy (0 = none, the paper's setting)")
    # ---- discriminator / reward model (M2, M3)
    head: str = opt("token", "reward head: token (log-prob of a trainable copy), scalar (Linear(hidden, 1)) or "
                             "hybrid (token + a learned per-state term h(s), not capped at 0, M2)")
    form: str = opt("airl", "discriminator form: airl (D = sigmoid(f - log pi)) or logit (D = sigmoid(z))")
    disc_lr: float = opt(1e-4, "reward model learning rate")
    disc_warmup: int = opt(200, "discriminator steps on base-policy samples before PPO starts")
    warmup_pool: int = opt(400, "problems the starting policy answers (4 samples each) for the discriminator warm-up "
                                 "(reward: the sample pool's training problems)")
    warmup_questions: str = opt("demos", "whose problems those are: demos (paired with the experts) or rl (other "
                                         "problems: an SFT policy knows the demos by heart; see also --reward-from)")
    disc_steps: int = opt(1, "discriminator steps per PPO iteration (0 = the reward stays as the warm-up or "
                             "--reward-from left it: a frozen reward, M2; at most 1000)")
    disc_batch: int = opt(16, "expert traces per discriminator step (as many negatives)")
    train_layers: int = opt(0, "reward: train only the top N decoder layers of the reward model (0 = all); the "
                                "frozen layers' output is computed once per trace and cached (M10)")
    perturbed_per_expert: int = opt(1, "perturbed copies of each expert trace added as negatives (M3; at most 100)")
    perturbed_labels: str = opt("after", "which tokens of a perturbed copy are labelled non-expert: after (from its "
                                         "first change to the end), line (that change's line only), change (its "
                                         "tokens that differ from the expert's, first to last), both (after, the "
                                         "changed tokens weighing half of the copy's loss) or first (after, the "
                                         "first change's tokens weighing half), M3")
    change_share: float = opt(0.5, "both / first labels: the share of a perturbed copy's loss that its changed "
                                   "tokens carry, the tokens after them the rest (M3)")
    label_smoothing: float = opt(0.1, "targets 1 - s/2 and s/2 (M2: 0.95 / 0.05)")
    expert_nll: float = opt(0.0, "airl, token head: weight of the experts' negative log-likelihood under f = log "
                                 "pi_phi, added to the discriminator loss: anchors f at its optimum log pi_E (M2)")
    entropy_coef: float = opt(1.0, "airl form: the policy is paid f - alpha log pi; alpha is the weight of that "
                                   "entropy bonus (1 = AIRL's log D - log(1 - D); < 1 sharpens the policy, M4)")
    reward_clip: float = opt(5.0, "clip per-token rewards to [-c, c] (0 = off)")
    # ---- evaluation
    eval_every: int = opt(20, "iterations/steps between evaluations and checkpoints")
    eval_questions: int = opt(100, "validation questions in the periodic evaluation, which picks the best "
                                   "checkpoint (none of them a test problem; --algo reward: test problems)")
    final_questions: int = opt(500, "held-out questions in the final evaluation")
    eval_batch: int = opt(256, "sequences sampled and scored at once in evaluation (lower it for big models)")
    eval_samples: int = opt(8, "samples per held-out question (pass@k, maj@k, best-of-k; at most 1024)")


# Presets: common overrides ("*") and per-algorithm ones, on top of TrainConfig's defaults.
PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {  # CPU, 2 cores, the synthetic world; sizes from the trials in method.md M9
        "pretrain": dict(steps=600, prompts_per_iter=64, lr=3e-3, eval_every=200),
        "sft": dict(steps=200, prompts_per_iter=32, lr=1e-3, eval_every=50),
        # outcome RL's PPO settings; a 400-step warm-up (was 200): at 400 demos 93 % of outcome RL over four seeds
        # against 89 %, at 50 demos a few points lower; the discriminator anchored at its optimum (expert_nll, M2):
        # AIRL from the base +13 / +16 points at 50 demos, +4 / +3 at 400 (seeds 0 / 1, README)
        "airl": dict(steps=100, eval_every=20, lr=1e-4, kl_beta=0.05, disc_warmup=400, expert_nll=1.0),
        "outcome": dict(steps=100, eval_every=20, lr=1e-4, kl_beta=0.05),
    },
    "smollm2": {  # CPU, a real 135M chat model on GSM8K, both from the hub: a smoke-scale run
        # offline: --data/--test-data FILE.jsonl (GSM8K's format) and --init FILE.gguf (or a local model folder)
        "*": dict(data="train", test_data="test", init="HuggingFaceTB/SmolLM2-135M-Instruct",
                  max_new_tokens=256, prompts_per_iter=2, samples_per_prompt=4, minibatch_size=4, lr=1e-5,
                  disc_lr=1e-5, disc_warmup=20, disc_batch=4, warmup_pool=16, eval_questions=16, final_questions=30,
                  eval_samples=4, eval_batch=32, steps=4, eval_every=4, top_p=0.95, n_demos=2000),
        # the reward model alone (M10): ~80 min on 2 cores, bf16 matmuls (the CPU has them), top 8 of 30 layers,
        # three perturbed copies of each expert (README: AUROC 0.757 -> 0.872 over one copy), each labelled to its
        # end with its changed tokens weighing half (README: low5 AUROC 0.903 -> 0.938, Hit@1 0.364 -> 0.556)
        "reward": dict(train_layers=8, disc_lr=2e-5, disc_batch=4, micro_batch_size=12, steps=200, eval_every=100,
                       warmup_pool=64, eval_questions=100, eval_samples=2, n_demos=600, precision="bf16-mixed",
                       perturbed_per_expert=3, perturbed_labels="both"),
    },
    "gsm8k-qwen0.5b": {  # one CUDA GPU (24 GB), the paper's setting at its smallest scale
        "*": dict(data="train", test_data="test", init="Qwen/Qwen2.5-0.5B-Instruct",
                  reward_init="Qwen/Qwen2.5-0.5B-Instruct", max_new_tokens=320, prompts_per_iter=8,
                  samples_per_prompt=8, minibatch_size=4, micro_batch_size=2, eval_batch=16, lr=1e-6, disc_lr=1e-5,
                  disc_warmup=50,
                  disc_batch=8,
                  steps=200, eval_questions=100, final_questions=500, top_p=0.95, gamma=0.9, kl_beta=0.02,
                  n_demos=3000),
    },
}


def from_preset(name: str, algo: str = "airl", **overrides) -> TrainConfig:
    """TrainConfig's defaults, then the preset's ("*" and `algo`), then `overrides`
    (None values ignored: an option not given on the command line)."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    preset = {**PRESETS[name].get("*", {}), **PRESETS[name].get(algo, {})}
    cfg = replace(TrainConfig(), preset=name, algo=algo, **preset)
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


KINDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}


def config_from(saved: dict, where: str = "the run's config.json") -> TrainConfig:
    """A run's TrainConfig from its config.json, ignoring keys this version does not know. A run folder is data:
    a value of the wrong type or out of range is a UserError naming `where`, never a crash (or a hang) later."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in defaults}
    for name, value in values.items():
        kind = type(defaults[name])  # str, int, float or bool, as JSON reads them back; 2 is a float's value too
        if not (type(value) is kind or (kind is float and type(value) is int)):
            raise UserError(f"{where}: {name} {value!r} is not {KINDS[kind.__name__]}")
    cfg = TrainConfig(**values)
    try:
        check_values(cfg)
    except UsageError as e:
        raise UserError(f"{where}: {str(e).lstrip('-')}") from None
    return cfg


def default_out(cfg: TrainConfig) -> Path:
    """runs/<algo>-<preset>-s<seed>; the tiny preset's pretraining run is the base policy that
    the other algorithms start from, runs/base-<size>-s<seed>."""
    if cfg.algo == "pretrain" and cfg.preset == "tiny":
        return Path(f"runs/base-{cfg.size}-s{cfg.seed}")
    return Path(f"runs/{cfg.algo}-{cfg.preset}-s{cfg.seed}")


def base_policy(cfg: TrainConfig) -> TrainConfig | None:
    """The run that builds the tiny preset's base policy (pretrained on the misconception corpus) when `cfg`
    starts from it (tiny preset, no --init); None otherwise. Stands in for the paper's off-the-shelf model."""
    if cfg.algo == "pretrain" or cfg.preset != "tiny" or cfg.init:
        return None
    return pretraining(cfg, cfg.size)


def reward_backbone(cfg: TrainConfig) -> TrainConfig | None:
    """The run that builds the reward model's backbone when `cfg.reward_size` names one: a base model of that size
    pretrained on the same corpus as the base policy, so that it cuts text into the same tokens (M2, M9)."""
    return pretraining(cfg, cfg.reward_size) if cfg.reward_size else None


def pretraining(cfg: TrainConfig, size: str) -> TrainConfig:
    """The tiny preset's pretraining run of a model of `size` on `cfg`'s world, in runs/base-<size>-s<seed>."""
    base = from_preset("tiny", algo="pretrain", seed=cfg.seed, size=size, n_corpus=cfg.n_corpus,
                       misconception_rate=cfg.misconception_rate)
    return replace(base, out=str(default_out(base)))


# ---------------------------------------------------------------- validation, before any work starts

CHOICES = {"algo": ("pretrain", "sft", "airl", "outcome", "reward"), "preset": tuple(PRESETS),
           "size": ("tiny", "small", "micro"), "reward_size": ("", "tiny", "small", "micro"),
           "head": ("token", "scalar", "hybrid"), "form": ("airl", "logit"),
           "advantage": ("gae", "group", "loo", "trace"),
           "warmup_questions": ("demos", "rl"), "perturbed_labels": ("after", "line", "change", "both", "first"),
           "report_to": ("", "tensorboard"),
           "precision": ("auto", "fp32", "bf16-mixed"),
           "leave_out": ("", "half_as_many", "gives_away", "times_as_many", "how_many_more", "forgot_last_step")}
AT_LEAST_ONE = ("prompts_per_iter", "samples_per_prompt", "minibatch_size", "ppo_epochs", "eval_every",
                "eval_questions", "final_questions", "eval_batch", "eval_samples", "max_new_tokens", "n_demos",
                "n_corpus", "disc_batch", "warmup_pool")
NOT_NEGATIVE = ("steps", "train_layers", "disc_warmup", "disc_steps", "perturbed_per_expert", "lora_rank",
                "micro_batch_size")
AT_MOST = {"samples_per_prompt": 1024, "eval_samples": 1024, "ppo_epochs": 100, "disc_steps": 1000,
           "perturbed_per_expert": 100}  # beyond: a typo's extra zeros, which would fill the memory or never end
INTERVALS = {"lr": "(0, inf)", "disc_lr": "(0, inf)", "temperature": "(0, inf)", "clip": "(0, inf)",
             "top_p": "(0, 1]", "gamma": "[0, 1]", "lam": "[0, 1]", "label_smoothing": "[0, 1)",
             "change_share": "(0, 1)", "entropy_coef": "[0, inf)", "misconception_rate": "[0, 1]",
             "seed": "[0, 4294967295]", "kl_beta": "[0, inf)", "expert_nll": "[0, inf)",
             "reward_clip": "[0, inf]", "target_kl": "[0, inf]"}  # 0 or inf: no clipping, no early stop


SYNTHETIC_PROBLEMS = 200_000  # distinct problems the synthetic world draws in seconds (~9 s; 2M would take hours)


def check(cfg: TrainConfig) -> TrainConfig:
    """Refuse, in one line, any setting that cannot work; returns `cfg` unchanged."""
    check_values(cfg)
    if cfg.algo == "outcome" and cfg.advantage in ("loo", "trace"):  # outcome RL pays one number per trace (M6)
        raise UsageError(f"--advantage {cfg.advantage} shapes a dense reward (airl); outcome RL pays one number per "
                         "trace: use group or gae")
    if cfg.head == "token" and cfg.form == "logit":  # f = log pi_phi <= 0 gives D <= 1/2: experts unreachable
        raise UsageError("--head token needs --form airl: with --form logit its reward f = log-prob <= 0 keeps "
                         "D <= 0.5, below the expert target (M2)")
    if cfg.reward_size and (cfg.preset != "tiny" or cfg.algo not in ("airl", "reward") or cfg.reward_init
                            or cfg.reward_from):
        raise UsageError("--reward-size pretrains the reward model's backbone on the tiny preset's world: use it with "
                         "--preset tiny, --algo airl or reward, and without --reward-init or --reward-from")
    if cfg.reward_from and (cfg.algo != "airl" or cfg.reward_init):
        raise UsageError("--reward-from starts an airl run's reward model from another run: use it with --algo airl "
                         "and without --reward-init")
    if cfg.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--report-to tensorboard needs tensorboard: pip install -e '.[track]'")
    if cfg.train_layers and cfg.algo != "reward":
        raise UsageError(f"--train-layers {cfg.train_layers} is for --algo reward (the reward model alone, M10); "
                         f"--algo {cfg.algo} trains every layer")
    if cfg.leave_out and cfg.data != "synthetic":
        raise UsageError(f"--leave-out {cfg.leave_out} keeps a misconception of the synthetic world out of its "
                         "demonstrations; GSM8K data has none")
    if cfg.leave_out and cfg.algo == "pretrain":
        raise UsageError(f"--leave-out {cfg.leave_out} keeps a misconception out of the demonstrations; "
                         "--algo pretrain reads none")
    if cfg.test_data and cfg.data == "synthetic" and given(cfg, "test_data"):
        raise UsageError(f"--test-data {cfg.test_data} names held-out GSM8K problems; the synthetic world draws its "
                         "own: give --data too, or leave --test-data out")
    if cfg.reward_init and cfg.algo not in ("airl", "reward") and given(cfg, "reward_init"):
        raise UsageError(f"--reward-init starts a reward model; --algo {cfg.algo} trains none: use --algo airl or "
                         "reward")
    if cfg.expert_nll and (cfg.algo != "airl" or cfg.head != "token") and given(cfg, "expert_nll"):
        raise UsageError(f"--expert-nll anchors the token head's f = log pi_phi at the experts' likelihood (M2): use "
                         f"it with --algo airl and --head token, not --algo {cfg.algo} --head {cfg.head}")
    if cfg.gguf_file and not cfg.init:
        raise UsageError("--gguf-file names a file inside --init's folder: give --init too")
    if cfg.resume and cfg.overwrite:
        raise UsageError("give --resume or --overwrite, not both")
    if cfg.resume and cfg.lora_rank > 0:
        raise UsageError("--resume is not supported with --lora-rank yet (checkpoints hold merged weights)")
    if cfg.data == "synthetic" and cfg.disc_batch > cfg.n_demos:
        raise UsageError(f"--disc-batch {cfg.disc_batch} is larger than --n-demos {cfg.n_demos}")
    return cfg


def given(cfg: TrainConfig, name: str) -> bool:
    """Was option `name` set by the user, not by the preset or TrainConfig's default? (A preset may set an option that
    some of its algorithms do not use, e.g. the GSM8K presets' `test_data` and `reward_init` for every algorithm.)"""
    return getattr(cfg, name) != getattr(from_preset(cfg.preset, cfg.algo), name)


def check_values(cfg: TrainConfig) -> None:
    """Each setting alone: a known choice, inside its range (NaN is inside none), a world that can be drawn."""
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            shown = ", ".join(str(a) or "''" for a in allowed)  # '' : the empty choice (none)
            raise UsageError(f"--{dashed(name)} {getattr(cfg, name)!r}: choose from {shown}")
    for name in AT_LEAST_ONE:
        if not getattr(cfg, name) >= 1:
            raise UsageError(f"--{dashed(name)} {getattr(cfg, name)}: must be at least 1")
    for name in NOT_NEGATIVE:
        if not getattr(cfg, name) >= 0:
            raise UsageError(f"--{dashed(name)} {getattr(cfg, name)}: must not be negative")
    for name, most in AT_MOST.items():
        if getattr(cfg, name) > most:
            raise UsageError(f"--{dashed(name)} {getattr(cfg, name)}: at most {most}")
    for name, interval in INTERVALS.items():
        if not inside(getattr(cfg, name), interval):
            raise UsageError(f"--{dashed(name)} {getattr(cfg, name)}: must be in {interval}")
    if cfg.data == "synthetic" and (asked := cfg.n_demos + cfg.n_corpus + cfg.eval_questions) > SYNTHETIC_PROBLEMS:
        raise UsageError(f"the synthetic world: --n-demos {cfg.n_demos}, --n-corpus {cfg.n_corpus} and "
                         f"--eval-questions {cfg.eval_questions} ask for {asked:,} distinct problems, more than the "
                         f"{SYNTHETIC_PROBLEMS:,} it can draw in seconds")


def inside(value: float, interval: str) -> bool:
    """Is `value` in an interval written like "(0, 1]"? NaN never is."""
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    above = value > lo if interval[0] == "(" else value >= lo
    below = value < hi if interval[-1] == ")" else value <= hi
    return above and below


def dashed(name: str) -> str:
    return name.replace("_", "-")

"""The reward model alone, at CPU scale: `minirl train --algo reward` (method.md M2, M3, M10).

What the AIRL loop does in small pieces (sample, one discriminator step, sample again), this mode does once and
then at length, so that a real model's reward can be trained on 2 cores:
1. A sample pool (`minirl.pool`), drawn once and kept in the run folder as `pool.jsonl`: the starting policy's
   answers to `warmup_pool` training problems (4 each) and to `eval_questions` held-out test problems
   (`eval_samples` each).
2. Traces (`Trace`): training experts (the `n_demos` demonstrations), `perturbed_per_expert` perturbed copies of
   each (M3) and the pooled answers; held-out experts, one perturbed copy of each, and the held-out pooled answers.
3. Features, once per trace (`minirl.traces`): the frozen layers' output and log pi, cached, so that a
   discriminator step runs only the top `train_layers` layers and the head.
4. `steps` discriminator steps of `disc_batch` experts against all their perturbed copies and as many pooled
   answers, with M2's token-level loss; gradients accumulated over `micro_batch_size` rows.
5. Every `eval_every` steps, held-out figures (`heldout_figures`) and a checkpoint that --resume continues from.
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch
from rich.console import Console
from torch import nn

from minirl import folders, runs
from minirl.airl import class_weights, discriminator_loss, label_mask
from minirl.cards import write_model_card
from minirl.config import TrainConfig, UsageError
from minirl.localise import lowest, lowest_mean_step, overlaps, step_of
from minirl.metrics import auroc, bootstrap_ci, mean_of_lowest
from minirl.models import RewardModel, autocast, save_lm
from minirl.pool import sample_pool
from minirl.rollout import micro_batches
from minirl.runs import Run
from minirl.tables import fit_table
from minirl.traces import Trace, cache_features, freeze_below, frozen_part, make_traces, top_layers, trace_logits


def labelled_tokens(traces: list[Trace], response_mask: torch.Tensor, labels: str = "after",
                    share: float = 0.5) -> torch.Tensor:
    """The tokens each trace is labelled on, [B, T] (`airl.label_mask`, as in the AIRL loop): a perturbed copy's
    only from its first change on (M3), to its end (`labels` "after"), to the end of the changed line ("line"), to
    its last token that differs from the expert's ("change"), or to its end with those tokens ("both") or the first
    change's only ("first", its `target`) carrying `share` of its loss. (SmolLM2, 100 held-out problems, 100
    steps: from the change rather than every token: clean-vs-perturbed AUROC of the mean logit 0.64 -> 0.75, Hit@1
    0.23 -> 0.36; docs/lab-notes.md.)"""
    prompt_len = response_mask.shape[1] - max(len(t.response_ids) for t in traces)  # rows' first response column
    starts = [t.target[0] if t.source == "perturbed" else None for t in traces]

    def copy_end(t: Trace, start: int) -> int:  # where a copy's labelled change ends
        if labels == "line":
            return step_of(start, t.steps)[1]
        return t.target[1] if labels == "first" else t.change_end

    ends = [None if start is None else copy_end(t, start) for t, start in zip(traces, starts)]
    return label_mask(response_mask, prompt_len, starts, labels, ends, share)


def fit_step(cfg: TrainConfig, reward_model: RewardModel, top: nn.Module, optimizer, traces: list[Trace],
             pad_id: int) -> dict[str, float]:
    """One discriminator step (M2) on cached traces: experts label 1, perturbed copies (from their change on) and
    pooled answers label 0, the classes weighted equally; gradients summed over chunks of `micro_batch_size` rows."""
    device = next(reward_model.parameters()).device
    is_expert = torch.tensor([t.source == "expert" for t in traces], device=device)
    weights = class_weights(is_expert)  # [B]
    optimizer.zero_grad(set_to_none=True)
    loss, correct = 0.0, {"expert": [], "perturbed": [], "policy": []}
    for rows in micro_batches(torch.arange(len(traces)), cfg.micro_batch_size):
        chunk = [traces[i] for i in rows]
        with autocast(cfg.precision, device):
            logits, mask = trace_logits(reward_model, top, chunk, cfg.form, pad_id)
        mask = labelled_tokens(chunk, mask, cfg.perturbed_labels, cfg.change_share)  # as in the AIRL loop
        chunk_loss = discriminator_loss(logits, mask, is_expert[rows], cfg.label_smoothing, weights[rows])
        chunk_loss.backward()
        loss += chunk_loss.item()
        mean_logit = ((logits * mask).sum(1) / mask.sum(1)).detach()  # [b]: > 0 says expert (mean D > 1/2)
        for trace, said_expert in zip(chunk, (mean_logit > 0).tolist()):
            correct[trace.source].append(said_expert == (trace.source == "expert"))
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in reward_model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    return {"disc_loss": loss, "disc_grad_norm": grad_norm.item(),
            **{f"disc_acc_{s}": sum(c) / len(c) for s, c in correct.items() if c}}


# ---------------------------------------------------------------- held-out figures (M7)


# how a trace's per-token scores become one number (M10): the mean, the lowest token, the last token (the EOS), and
# `low5`, the mean of the 5 lowest tokens (a soft minimum; k chosen on unused training problems, README)
TRACE_SCORES = ("mean", "min", "last", "low5")


@torch.no_grad()
def trace_scores(cfg: TrainConfig, reward_model: RewardModel, top: nn.Module, traces: list[Trace],
                 pad_id: int) -> list[dict]:
    """Per trace, over its response tokens, for the discriminator logit (`reward`, what PPO would be paid, M2), the
    learned reward f itself (`f`: what `minirl rerank` and `minirl.reward.score` rank by; f = the logit in the
    `logit` form) and the policy's log pi (`logprob`): each `TRACE_SCORES` (the last token is the EOS of a complete
    answer: the one position that has seen the whole trace), and the index of the lowest token but the last
    (localisation: an expert's or perturbed copy's last token is its EOS, never where an error lies) and, for a
    perturbed copy, the first token of its line with the lowest mean score (`line`: the paper's step-interval view)."""
    reward_model.eval()
    device, scored, size = next(reward_model.parameters()).device, [], max(cfg.micro_batch_size, 8)
    for start in range(0, len(traces), size):
        chunk = traces[start: start + size]
        with autocast(cfg.precision, device):
            logits, mask = trace_logits(reward_model, top, chunk, cfg.form, pad_id)
        for row, trace in enumerate(chunk):
            logit, logp = logits[row][mask[row].bool()].float().tolist(), trace.logp[len(trace.prompt_ids):].tolist()
            f = [z + lp for z, lp in zip(logit, logp)] if cfg.form == "airl" else logit  # the learned reward f_t
            values = {"reward": logit, "f": f, "logprob": logp}
            scored.append({f"{name}_{how}": value for name, v in values.items() for how, value in
                           (("mean", sum(v) / len(v)), ("min", min(v)), ("last", v[-1]), ("low5", mean_of_lowest(v, 5)),
                            ("lowest", lowest(v[:-1] or v)[0]),  # the EOS is never where an error lies
                            ("line", lowest_mean_step(v, trace.steps)[0] if trace.steps else None))})
    reward_model.train()
    return scored


def heldout_figures(cfg: TrainConfig, reward_model: RewardModel, top: nn.Module, traces: list[Trace], pad_id: int,
                    intervals: bool = False, scores: list[dict] | None = None) -> dict[str, float]:
    """On held-out problems, for the reward, for f and for the policy's log-prob (M7, M10), with 95 % bootstrap
    intervals over problems when `intervals`:
      clean_vs_perturbed_auroc  does the trace score rank the expert solutions above their perturbed copies;
      hit1                      is the lowest-scoring token of a perturbed copy inside its first change;
      step1                     is that token's line (step) the line of the first change (the paper's step-level
                                Hit@1 of a dense reward; `step1_chance` = the mean of 1 / lines), or (`line`) is
                                the line with the lowest mean score (the paper's step-interval reward);
      expert_over_wrong         how often the expert solution scores above the policy's own wrong answer.
    Trace scores: `TRACE_SCORES`; Hit@1 uses the lowest token. `scores`: the traces' `trace_scores`, when known."""
    scores = dict(zip(map(id, traces), scores or trace_scores(cfg, reward_model, top, traces, pad_id)))
    by_question: dict[int, dict[str, list[Trace]]] = {}
    for t in traces:
        by_question.setdefault(t.question, {"expert": [], "perturbed": [], "policy": []})[t.source].append(t)
    groups = list(by_question.values())

    def clean_vs_perturbed_auroc(gs: list[dict], name: str) -> float:
        pairs = [(scores[id(t)][name], t.source == "expert") for g in gs for t in g["expert"] + g["perturbed"]]
        return auroc([s for s, _ in pairs], [y for _, y in pairs])

    def hit1(gs: list[dict], name: str) -> float:
        hits = [float(t.target[0] <= scores[id(t)][name] < t.target[1]) for g in gs for t in g["perturbed"]]
        return sum(hits) / len(hits) if hits else float("nan")

    def step1(gs: list[dict], name: str) -> float:  # the paper's step view: is the chosen line the changed one
        hits = [overlaps(step_of(scores[id(t)][name], t.steps), t.target) for g in gs for t in g["perturbed"]]
        return sum(hits) / len(hits) if hits else float("nan")

    def expert_over_wrong(gs: list[dict], name: str) -> float:
        per_question = [sum(scores[id(g["expert"][0])][name] > scores[id(w)][name] for w in wrong) / len(wrong)
                        for g in gs if (wrong := [t for t in g["policy"] if not t.correct])]
        return sum(per_question) / len(per_question) if per_question else float("nan")

    figures = {}
    for metric, aggregates in ((clean_vs_perturbed_auroc, TRACE_SCORES), (hit1, ("lowest",)),
                               (step1, ("lowest", "line")), (expert_over_wrong, TRACE_SCORES)):
        for name in (f"{score}_{how}" for how in aggregates for score in ("reward", "f", "logprob")):
            key = f"{metric.__name__}_{name}"
            figures[key] = metric(groups, name)
            if intervals:
                low, high = bootstrap_ci(groups, statistic=lambda gs, m=metric, n=name: m(gs, n), n_boot=500)
                figures[f"{key}_ci"] = [low, high]
    lines = [len(t.steps) for g in groups for t in g["perturbed"]]
    figures["step1_chance"] = sum(1 / n for n in lines) / len(lines) if lines else float("nan")
    return figures


# ---------------------------------------------------------------- the loop


def check_train_layers(cfg: TrainConfig, lm) -> None:
    """Refuse, in one line, `--train-layers` beyond the reward model's decoder layers."""
    n_layers = len(lm.model.layers)
    if cfg.train_layers > n_layers:
        raise UsageError(f"--train-layers {cfg.train_layers}: the model has {n_layers} decoder layers")


def fit_reward(cfg: TrainConfig, run: Run, policy, tokenizer, data: dict, reward_model: RewardModel) -> dict:
    """Pool, traces, features, then `steps` discriminator steps on `reward_model` (`airl.make_reward_model`, its
    `--train-layers` checked) with held-out figures and checkpoints."""
    policy.eval().requires_grad_(False)
    reward_model = reward_model.to(next(policy.parameters()).device)
    pad_id, (k, backbone) = tokenizer.pad_token_id, frozen_part(cfg, reward_model)
    optimizer = torch.optim.AdamW(freeze_below(reward_model, k), lr=cfg.disc_lr)
    top = top_layers(reward_model.lm, k)
    demos, test = data["demos"], data["test"][: cfg.eval_questions]
    train_pool = sample_pool(cfg, run, policy, tokenizer, "train", demos[: cfg.warmup_pool], 4)
    test_pool = sample_pool(cfg, run, policy, tokenizer, "test", test, cfg.eval_samples)
    traces = make_traces(tokenizer, demos, train_pool, random.Random(cfg.seed), cfg.perturbed_per_expert)
    heldout = make_traces(tokenizer, test, test_pool, random.Random(cfg.seed + 1))
    cache_features(policy, traces + heldout, k, pad_id, max(cfg.micro_batch_size, 8), cfg.precision, backbone)
    experts = [t for t in traces if t.source == "expert"]
    perturbed: dict[int, list[Trace]] = {}  # question -> its perturbed copies
    for t in traces:
        if t.source == "perturbed":
            perturbed.setdefault(t.question, []).append(t)
    own = [t for t in traces if t.source == "policy"]
    resuming = cfg.resume and folders.last_checkpoint(run.folder) is not None
    start, _, _ = runs.resume(run, cfg if resuming else replace(cfg, resume=False), policy, {"disc": optimizer},
                              reward_model)
    for step in run.progress(range(start, cfg.steps), "reward model"):
        rng = random.Random(cfg.seed * 1_000_003 + step)  # the same batches with or without an interruption
        chosen = rng.sample(experts, min(cfg.disc_batch, len(experts)))
        batch = (chosen + [bad for t in chosen for bad in perturbed.get(t.question, [])]
                 + rng.sample(own, min(cfg.disc_batch, len(own))))
        run.log({"step": step + 1, **fit_step(cfg, reward_model, top, optimizer, batch, pad_id)})
        if (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            figures = heldout_figures(cfg, reward_model, top, heldout, pad_id)
            run.log({"eval_step": step + 1, **figures})
            runs.console.print(f"step {step + 1}: " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
            runs.save_checkpoint(run, step + 1, -1.0, 0, policy, tokenizer, {"disc": optimizer}, reward_model)
    figures = heldout_figures(cfg, reward_model, top, heldout, pad_id, intervals=True)
    run.log({"eval_step": cfg.steps, **{k: v for k, v in figures.items() if not k.endswith("_ci")}})
    runs.require_finite(reward_model, "the reward model")
    reward_model.save(run.folder / "reward", tokenizer)
    save_lm(policy, tokenizer, run.folder / "policy")
    counts = {f"heldout_{s}": sum(t.source == s for t in heldout) for s in ("expert", "perturbed", "policy")}
    summary = runs.write_summary(run, {**figures, **counts, "heldout_questions": len(test),
                                       "pool_train": len(own), "pool_test_right": sum(bool(t.correct) for t in heldout
                                                                                      if t.source == "policy")})
    for kind in ("policy", "reward"):
        write_model_card(run.folder / kind, kind, folders.saved_config(run.folder), summary)
    Console().print(fit_table(summary, f"reward model · {run.folder}", TRACE_SCORES))
    return summary

"""The traces of `minirl train --algo reward` and their cached features (method.md M2, M3, M10).

A `Trace` is one (prompt, response) pair in token ids: a training or held-out expert, a perturbed copy of one
(M3, with the token range of its first change, its lines and its changed tokens), or a pooled answer of the
policy. The reward model is a copy of the policy (M2) of which only the top `train_layers` decoder layers and the
final norm train. Everything below them is the policy's, frozen, so one forward pass of the policy gives both
log pi(y_t) (the `airl` form needs it) and the hidden state entering the trained layers (a backbone of its own,
`--reward-init` or `--reward-size`, takes one more pass for that state). Both are cached on the trace
(`cache_features`): a discriminator step then runs only the top layers and the head (`trace_logits`; exact: the
reward is the same as the whole model's, tested). `minirl.fit_reward` trains on them.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from minirl.airl import last_difference
from minirl.config import TrainConfig
from minirl.data import format_prompt
from minirl.localise import char_to_token_span
from minirl.logprobs import logprobs_of, position_ids, response_logprobs
from minirl.models import RewardModel, autocast
from minirl.perturb import perturb
from minirl.rollout import make_batch, text_ids
from minirl.viz import split_steps


@dataclass
class Trace:
    source: str  # "expert", "perturbed" or "policy" (a pooled sample of the starting policy)
    question: int  # index of its problem in its split
    prompt_ids: list[int]
    response_ids: list[int]
    correct: bool | None = None  # pooled samples: is the final answer right
    target: tuple[int, int] | None = None  # perturbed: token range [start, end) of the first change (M7)
    steps: list[tuple[int, int]] | None = None  # perturbed: the token range of each line (step) of the response
    kind: str | None = None  # perturbed: the rule that changed it (`perturb.PERTURBATIONS`)
    change_end: int | None = None  # perturbed: one past its last token that differs from the expert's
    hidden: torch.Tensor | None = None  # [n_tokens, H]: the state entering the trained layers (prompt + response)
    logp: torch.Tensor | None = None  # [n_tokens]: the frozen policy's log pi of each token (column 0 = 0)


def make_traces(tokenizer, tasks: list[dict], pooled: list[dict], rng: random.Random, copies: int = 1) -> list[Trace]:
    """Experts, up to `copies` distinct perturbed copies of each (their first change as a token range, M3/M7) and
    the pooled answers (`pooled`, from `sample_pool`) except those identical to their expert's."""
    traces = []
    for i, task in enumerate(tasks):
        prompt = format_prompt(task["question"], tokenizer)
        expert = Trace("expert", i, *text_ids(tokenizer, prompt, task["answer"]))
        traces.append(expert)
        texts = set()
        for got in (perturb(task["answer"], rng) for _ in range(copies)):
            if got is None or got[0] in texts:
                continue
            texts.add(got[0])
            prompt_ids, response_ids = text_ids(tokenizer, prompt, got[0])
            pieces = [tokenizer.decode([t]) for t in response_ids]
            if "".join(pieces[:-1]) == got[0]:  # tokens that spell the text: the change can be located
                target = char_to_token_span(pieces, got[1])
                traces.append(Trace("perturbed", i, prompt_ids, response_ids, target=target,
                                    steps=[(a, b) for a, b, _ in split_steps(pieces[:-1], [0.0] * (len(pieces) - 1))],
                                    kind=got[2],
                                    change_end=max(target[1], last_difference(response_ids, expert.response_ids))))
    return traces + [Trace("policy", r["question"], r["prompt_ids"], r["response_ids"], r["correct"])
                     for r in pooled if r["response_ids"]  # a sample that copies its expert is no negative (M9)
                     and r["text"].strip() != tasks[r["question"]]["answer"].strip()]


# ---------------------------------------------------------------- cached features and the trained top layers


def top_layers(lm: nn.Module, k: int) -> nn.Module:
    """A view of `lm`'s decoder that runs only its top `k` layers (and final norm) on given hidden states
    (`inputs_embeds`); it shares every weight with `lm`."""
    decoder = lm.model
    top = copy.copy(decoder)
    top._modules = {**decoder._modules, "layers": nn.ModuleList(list(decoder.layers)[len(decoder.layers) - k:])}
    return top


def freeze_below(reward_model: RewardModel, k: int) -> list[nn.Parameter]:
    """Train the top `k` layers, the final norm and a scalar head; freeze the rest (the embedding and, tied to it,
    the LM head too, so the cached features stay valid). Returns the trained parameters."""
    reward_model.requires_grad_(False)
    trained = [*reward_model.lm.model.layers[-k:], reward_model.lm.model.norm]
    if reward_model.head is not None:
        trained.append(reward_model.head)
    for module in trained:
        module.requires_grad_(True)
    return [p for module in trained for p in module.parameters()]


@torch.no_grad()
def cache_features(policy, traces: list[Trace], k: int, pad_id: int, batch_size: int, precision: str,
                   backbone: nn.Module | None = None) -> None:
    """One forward pass of the frozen policy per trace: log pi of every token and the hidden state entering the
    top `k` layers, kept on the trace. That state is the policy's own when the reward model is a copy of it (M2),
    else one more pass through the reward model's `backbone` (`--reward-init`, `--reward-size`). Batches are formed
    in order of length, since a batch pads to its longest trace."""
    device = next(policy.parameters()).device
    todo = sorted((t for t in traces if t.hidden is None), key=lambda t: len(t.prompt_ids) + len(t.response_ids))
    for start in tqdm(range(0, len(todo), batch_size), desc="caching features", unit="batch", leave=False):
        chunk = todo[start: start + batch_size]
        batch = make_batch([t.prompt_ids for t in chunk], [t.response_ids for t in chunk], pad_id).to(device)
        inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=position_ids(batch.attention_mask))
        with autocast(precision, device):
            out = policy(**inputs, output_hidden_states=backbone is None)
            states = (out if backbone is None else backbone.model(**inputs, output_hidden_states=True)).hidden_states
        logp = logprobs_of(out.logits, batch.input_ids)  # [b, T]
        hidden = states[len(states) - 1 - k].float()  # [b, T, H]: input of layer L - k
        for row, trace in enumerate(chunk):
            real = batch.attention_mask[row].bool()
            trace.hidden, trace.logp = hidden[row][real].cpu(), logp[row][real].float().cpu()


def frozen_part(cfg: TrainConfig, reward_model: RewardModel) -> tuple[int, nn.Module | None]:
    """What `cache_features` needs of the reward model: k, its top layers that train (`--train-layers`, 0 = all), and
    its own backbone when it is not a copy of the policy (`--reward-init`, `--reward-size`), else None."""
    return cfg.train_layers or len(reward_model.lm.model.layers), reward_model.lm if cfg.reward_init else None


def trace_logits(reward_model: RewardModel, top: nn.Module, traces: list[Trace], form: str, pad_id: int):
    """The discriminator's logit for every token of `traces` (M2), from their cached features: (logits [B, T],
    response mask [B, T]). Pads the traces into minirl's batch layout; only the top layers and the head run."""
    batch = make_batch([t.prompt_ids for t in traces], [t.response_ids for t in traces], pad_id)
    device = next(reward_model.parameters()).device
    batch, real = batch.to(device), batch.attention_mask.bool().to(device)
    hidden = torch.zeros(*batch.input_ids.shape, traces[0].hidden.shape[-1], device=device)
    hidden[real] = torch.cat([t.hidden for t in traces]).to(device)  # row-major: trace by trace, token by token
    policy_logp = torch.zeros(batch.input_ids.shape, device=device)
    policy_logp[real] = torch.cat([t.logp for t in traces]).to(device)
    h = top(inputs_embeds=hidden, attention_mask=batch.attention_mask,
            position_ids=position_ids(batch.attention_mask)).last_hidden_state  # [B, T, H]
    if reward_model.head_kind == "scalar":  # z_t
        f = reward_model.head(h.float()).squeeze(-1).float()
    else:  # token and hybrid heads: f_t = log pi_phi(y_t | x, y_<t), on response tokens only
        P = batch.prompt_len  # the LM head runs where a response token is predicted: ~40 % of its work saved
        logits = reward_model.lm.lm_head(h[:, P - 1: -1])  # [B, R, V]: the positions that predict y_1..y_R
        f = response_logprobs(logits, batch.input_ids, P)  # [B, T]
        if reward_model.head_kind == "hybrid":  # + h(s_t), read at the state before y_t (M2)
            f = f + F.pad(reward_model.head(h[:, :-1].float()).squeeze(-1).float(), (1, 0))
    return (f - policy_logp if form == "airl" else f), batch.response_mask

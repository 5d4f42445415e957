"""The discriminator: expert tokens vs policy tokens (method.md M2, M3).

The reward model gives every response token a learned reward f_t (`RewardModel`). The
discriminator turns it into a per-token probability that the token came from an expert:
  `logit` form (GAIL-style, the paper's code):  D_t = sigmoid(f_t)
  `airl`  form (Fu et al. 2018):                D_t = sigmoid(f_t - log pi(y_t | s_t))
and is trained with token-level binary cross-entropy (M2): response tokens only, each
sequence's loss divided by its length, label smoothing, classes weighted equally.
The policy is paid the discriminator's logit, log D_t - log(1 - D_t): that is f_t in the
`logit` form and f_t - log pi(y_t | s_t) in the `airl` form (`policy_rewards`).

Before PPO starts, `warm_up_discriminator` trains it on the starting policy's own samples, so
that the first rewards already mean something (M2, M9).

Left out on purpose: gradient penalties and replay buffers of old samples. One discriminator step per rollout
batch, as in the paper (`--disc-steps`; 0 keeps the reward fixed, e.g. one taken from another run).
"""

from __future__ import annotations

import copy
import difflib
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from minirl.config import TrainConfig, UsageError, UserError
from minirl.data import format_prompt
from minirl.logprobs import token_logprobs
from minirl.models import RewardModel, autocast, check_same_tokenizer, load_lm, load_tokenizer, pick_device
from minirl.perturb import perturb
from minirl.rollout import Batch, make_batch, micro_batches, sample_answers, text_ids
from minirl.runs import Run, saved_config


def discriminator_logits(reward_model: RewardModel, batch: Batch, form: str,
                         policy_logp: torch.Tensor | None = None) -> torch.Tensor:
    """M2: the logit of D_t for every token, [B, T]. `policy_logp` (detached log pi, [B, T])
    is required by the `airl` form."""
    f = reward_model(batch.input_ids, batch.attention_mask)  # [B, T]
    if form == "logit":
        return f
    if form != "airl":
        raise ValueError(f"unknown discriminator form {form!r}; choose 'airl' or 'logit'")
    return f - policy_logp.detach()


def class_weights(is_expert: torch.Tensor) -> torch.Tensor:
    """Each sequence's weight in the discriminator loss, [B]: the two classes weigh equally, so a row of a class
    with n rows weighs 1 / (2 n) (1 / n when the batch holds one class only). The loss is then a weighted sum
    over rows, which any split of the rows adds up to (gradient accumulation)."""
    n_expert, n_other = is_expert.sum(), (~is_expert).sum()
    classes = (n_expert > 0).long() + (n_other > 0).long()
    return 1.0 / (classes * torch.where(is_expert, n_expert, n_other)).float()


def discriminator_loss(logits: torch.Tensor, response_mask: torch.Tensor, is_expert: torch.Tensor,
                       label_smoothing: float = 0.1, weights: torch.Tensor | None = None) -> torch.Tensor:
    """M2: token-level BCE on response tokens, per-sequence length-normalised, targets
    1 - s/2 (expert) and s/2 (policy), the two classes weighted equally (a batch holding one class only
    is that class's mean, never NaN). logits, response_mask: [B, T]; is_expert: [B] bool. `weights` [B]: the
    rows' `class_weights` in the whole batch, when these rows are one chunk of it."""
    mask = response_mask.float()
    target = torch.where(is_expert, 1 - label_smoothing / 2, label_smoothing / 2)[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")  # [B, T]
    per_seq = (bce * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
    return (per_seq * (class_weights(is_expert) if weights is None else weights)).sum()


def expert_nll(f: torch.Tensor, response_mask: torch.Tensor, is_expert: torch.Tensor, n_experts: int) -> torch.Tensor:
    """M2's anchor: the experts' per-token negative log-likelihood under the token head's f = log pi_phi, each
    expert trace's mean, summed over this chunk's expert rows and divided by the whole batch's `n_experts` (so the
    chunks add up to the batch's mean). At the discriminator's optimum f = log pi_E; this term pulls f there
    directly, where the cross-entropy alone only ranks f against log pi. f, response_mask: [B, T]; is_expert: [B]."""
    mask = response_mask.float()
    nll = -(f.float() * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
    return (nll * is_expert.float()).sum() / max(n_experts, 1)


@torch.no_grad()
def discriminator_stats(logits: torch.Tensor, response_mask: torch.Tensor, source: list[str]) -> dict[str, float]:
    """Accuracy and mean per-token logit for each source ("expert", "policy", "perturbed") over the tokens in
    `response_mask` (in a discriminator step: those labelled, so a perturbed copy's from its change on, M3);
    a sequence is called expert when its mean token logit is above 0 (mean D > 1/2)."""
    mask = response_mask.float()
    mean_logit = (logits * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
    stats = {}
    for name in ("expert", "policy", "perturbed"):
        rows = [i for i, s in enumerate(source) if s == name]
        if rows:
            said_expert = (mean_logit[rows] > 0).float().mean().item()
            stats[f"disc_acc_{name}"] = said_expert if name == "expert" else 1 - said_expert
            stats[f"disc_logit_{name}"] = mean_logit[rows].mean().item()
    return stats


def policy_rewards(reward_model: RewardModel, batch: Batch, form: str, policy_logp: torch.Tensor,
                   clip: float = 0.0, entropy_coef: float = 1.0) -> torch.Tensor:
    """M2: the per-token reward paid to PPO, log D_t - log(1 - D_t) = the discriminator's
    logit, on response tokens (0 elsewhere), optionally clipped to [-clip, clip]. [B, T]
    In the `airl` form that logit is f_t - log pi(y_t | s_t), whose -log pi part is an entropy bonus of weight 1;
    `entropy_coef` (alpha) pays f_t - alpha log pi(y_t | s_t) instead (M4: alpha < 1 sharpens the policy the
    reward leads to)."""
    with torch.no_grad():
        r = discriminator_logits(reward_model, batch, form, policy_logp)
        if form == "airl" and entropy_coef != 1.0:  # ALGO LOGIC: the entropy bonus's weight (M4)
            r = r + (1.0 - entropy_coef) * policy_logp
    if clip > 0:
        r = r.clamp(-clip, clip)
    return r * batch.response_mask


def negatives(expert_tasks: list[dict], samples: list[tuple], k_perturbed: int,
              rng: random.Random) -> tuple[list[tuple], list[tuple[str, str, str]]]:
    """Negatives (M3): the policy's samples, except any identical to an expert trace of the same question
    (M9: they made the loss stall at log 2); and `k_perturbed` corrupted copies of each expert trace.
    A sample is (question, response text) or (question, text, (prompt ids, response ids)): with ids, the
    discriminator sees exactly the sampled tokens. Returns (policy samples, perturbed copies as
    (question, perturbed text, expert text): the expert's text says where the copy starts to differ)."""
    expert = {t["question"]: t["answer"].strip() for t in expert_tasks}
    policy = [s for s in samples if expert.get(s[0]) != s[1].strip()]
    perturbed = []
    for t in expert_tasks:
        for _ in range(k_perturbed):
            got = perturb(t["answer"], rng)
            if got is not None:
                perturbed.append((t["question"], got[0], t["answer"]))
    return policy, perturbed


def sampled(batch: Batch, tokenizer, questions: list[str]) -> list[tuple[str, str, tuple[list[int], list[int]]]]:
    """The rows of a sampled batch as discriminator samples: (question, text, (prompt ids, response ids))."""
    return list(zip(questions, batch.texts(tokenizer), batch.token_ids()))


def first_difference(a: list[int], b: list[int]) -> int:
    """The first position where two token lists differ (the shorter one's length when it is a prefix)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def last_difference(a: list[int], b: list[int]) -> int:
    """One past the last position of `a` that differs from `b`, aligning their ends (what follows it in `a` is `b`'s
    tail token for token); at least one past `first_difference`, so a copy's change is never empty."""
    same_tail = next((i for i, (x, y) in enumerate(zip(reversed(a), reversed(b))) if x != y), min(len(a), len(b)))
    return max(len(a) - same_tail, min(first_difference(a, b) + 1, len(a)))


def differing_runs(a: list[int], b: list[int]) -> list[tuple[int, int]]:
    """The runs of `a`'s tokens that differ from `b`'s, as [start, end) ranges of `a`, aligned by `difflib` (tokens
    dropped from `b` show as an empty run where they were)."""
    matcher = difflib.SequenceMatcher(a=b, b=a, autojunk=False)
    return [(start, end) for op, _, _, start, end in matcher.get_opcodes() if op != "equal"]


def first_change_end(a: list[int], b: list[int]) -> int:
    """One past the last token of `a`'s first run that differs from `b`: where the first change ends when a copy
    changes more than one spot (a dropped token: the token after it); at least one past `first_difference`."""
    start, end = (differing_runs(a, b) or [(len(a), len(a))])[0]
    return min(max(end, start + 1, first_difference(a, b) + 1), len(a))


def from_the_change(response_mask: torch.Tensor, prompt_len: int, starts: list[int | None],
                    ends: list[int | None] | None = None) -> torch.Tensor:
    """The tokens each row is labelled on (M3), [B, T]: its response tokens, but a perturbed copy's only from its
    first changed token (`starts[row]`, counted in response tokens; None: the whole response). Before it the copy is
    its expert's text token for token, with the same hidden states (causal attention): labelling those tokens 0
    would teach the same input both labels. With `ends`, a copy's labels also stop before `ends[row]` (its changed
    line only, `--perturbed-labels line`, or its changed tokens, `change`). Responses start at column `prompt_len`
    (`rollout.Batch`)."""
    mask = response_mask.clone()
    for row, start in enumerate(starts):
        if start is not None:
            mask[row, : prompt_len + start] = 0
        if ends is not None and ends[row] is not None:
            mask[row, prompt_len + ends[row]:] = 0
    return mask


def change_weighted(after: torch.Tensor, change: torch.Tensor, share: float = 0.5) -> torch.Tensor:
    """`--perturbed-labels both` or `first` (M3), [B, T] float: a copy labelled from its first change to its end
    (`after`), its changed tokens (`change`, inside `after`) weighted so that they carry `share` of its loss
    (`--change-share`) and the tokens after them the rest. A row with nothing after its change (an expert, a
    sample) keeps weight 1 everywhere."""
    after, change = after.float(), change.float()
    rest, changed = (after - change).sum(1, keepdim=True), change.sum(1, keepdim=True)  # [B, 1]
    weight = share / (1 - share) * rest / changed.clamp(min=1)  # w changed / (w changed + rest) = share
    weight = torch.where((rest > 0) & (changed > 0), weight, torch.ones_like(rest))
    return after + change * (weight - 1)


def label_mask(response_mask: torch.Tensor, prompt_len: int, starts: list[int | None], labels: str,
               ends: list[int | None] | None = None, share: float = 0.5) -> torch.Tensor:
    """The tokens each row is labelled on under `--perturbed-labels labels` (M3), [B, T]: `from_the_change` to a
    copy's end ("after") or to `ends[row]` ("line": its changed line's end, "change": one past its last token that
    differs); "both" and "first" are "after" with the tokens up to `ends[row]` carrying `share` of the copy's loss
    (`change_weighted`; "both": every changed token, to `last_difference`; "first": the first change only, to
    `first_change_end`)."""
    if labels in ("both", "first"):
        return change_weighted(from_the_change(response_mask, prompt_len, starts),
                               from_the_change(response_mask, prompt_len, starts, ends), share)
    return from_the_change(response_mask, prompt_len, starts, None if labels == "after" else ends)


def line_end(pieces: list[str], start: int) -> int:
    """One past the last token of the line that token `start` lies on (`pieces`: the tokens as text; a token that
    holds a newline ends its line, as in `viz.split_steps`). The last line runs to the end, its EOS included; in
    `--algo reward` the lines are the trace's `steps`, which leave the EOS out (`fit_reward.labelled_tokens`)."""
    return next((i + 1 for i in range(start, len(pieces)) if "\n" in pieces[i]), len(pieces))


def discriminator_batch(tokenizer, experts: list[dict], policy_samples: list[tuple],
                        perturbed: list[tuple[str, str, str]], labels: str = "after", share: float = 0.5
                        ) -> tuple[Batch, list[str], torch.Tensor]:
    """Experts, the policy's samples (their sampled ids when they carry them) and perturbed experts as one
    batch, with the source of every row and the tokens each row is labelled on (`label_mask`, [B, T]): a perturbed
    copy's from its first change to its end (`labels` "after"), to the end of that line ("line"), to its last token
    that differs from the expert's ("change"), or to its end with those tokens ("both") or its first change's only
    ("first") carrying `share` of the copy's loss."""
    def ids(question: str, response: str) -> tuple[list[int], list[int]]:
        return text_ids(tokenizer, format_prompt(question, tokenizer), response)

    copies = [(ids(q, text), ids(q, expert_text)[1]) for q, text, expert_text in perturbed]
    rows = ([ids(t["question"], t["answer"]) for t in experts]
            + [s[2] if len(s) > 2 else ids(s[0], s[1]) for s in policy_samples] + [c for c, _ in copies])
    source = ["expert"] * len(experts) + ["policy"] * len(policy_samples) + ["perturbed"] * len(perturbed)
    changes = [first_difference(response, expert) for (_, response), expert in copies]  # a copy's first change
    whole = [None] * (len(experts) + len(policy_samples))  # experts and samples: every response token
    batch = make_batch([p for p, _ in rows], [r for _, r in rows], tokenizer.pad_token_id)

    def copy_end(response: list[int], expert: list[int], start: int) -> int:  # where its labelled change ends
        if labels == "line":
            return line_end([tokenizer.decode([t]) for t in response], start)
        return first_change_end(response, expert) if labels == "first" else last_difference(response, expert)

    ends = whole + [copy_end(response, expert, start) for ((_, response), expert), start in zip(copies, changes)]
    return batch, source, label_mask(batch.response_mask, batch.prompt_len, whole + changes, labels, ends, share)


def discriminator_step(reward_model: RewardModel, optimizer: torch.optim.Optimizer, policy, tokenizer,
                       experts: list[dict], policy_samples: list[tuple], perturbed: list[tuple[str, str, str]],
                       form: str, label_smoothing: float = 0.1, max_grad_norm: float = 1.0,
                       micro_batch_size: int = 0, precision: str = "fp32", labels: str = "after",
                       change_share: float = 0.5, nll_weight: float = 0.0) -> dict[str, float]:
    """One optimiser step of the discriminator on experts (label 1) vs the policy's samples and perturbed
    experts (label 0, from their first change on: M3), its gradient accumulated over chunks of `micro_batch_size`
    rows (0: one chunk); returns the loss and per-source diagnostics. Forward passes run under `precision`;
    `labels`, `change_share`: which tokens of a perturbed copy are labelled, and how (`discriminator_batch`);
    `nll_weight` > 0 (token head, airl form) adds that weight of `expert_nll` to the loss."""
    if nll_weight and (form != "airl" or reward_model.head_kind != "token"):
        raise ValueError("the expert NLL anchors the token head's f = log pi_phi, in the airl form (M2)")
    device = next(reward_model.parameters()).device
    batch, source, labelled = discriminator_batch(tokenizer, experts, policy_samples, perturbed, labels,
                                                  change_share)
    batch, labelled = batch.to(device), labelled.to(device)
    is_expert = torch.tensor([s == "expert" for s in source], device=device)
    weights = class_weights(is_expert)  # [B]: the chunks' losses add up to the whole batch's
    n_experts = int(is_expert.sum())
    reward_model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, nll, logits = 0.0, 0.0, []  # disc_loss is the cross-entropy alone; the anchor is logged apart
    for rows in micro_batches(torch.arange(len(source), device=device), micro_batch_size):
        chunk = batch.select(rows)
        with autocast(precision, device):
            policy_logp = None
            if form == "airl":
                with torch.no_grad():
                    policy_logp = token_logprobs(policy, chunk.input_ids, chunk.attention_mask)
            chunk_logits = discriminator_logits(reward_model, chunk, form, policy_logp)  # [b, T]
        chunk_loss = discriminator_loss(chunk_logits, labelled[rows], is_expert[rows], label_smoothing,
                                        weights[rows])
        chunk_nll = torch.zeros(())
        if nll_weight:  # f = logit + log pi in the airl form (M2)
            chunk_nll = expert_nll(chunk_logits + policy_logp, labelled[rows], is_expert[rows], n_experts)
        (chunk_loss + nll_weight * chunk_nll).backward()
        loss, nll, logits = loss + chunk_loss.item(), nll + chunk_nll.item(), logits + [chunk_logits.detach()]
    grad_norm = torch.nn.utils.clip_grad_norm_(reward_model.parameters(), max_grad_norm)
    optimizer.step()
    return {"disc_loss": loss, "disc_grad_norm": grad_norm.item(), **({"disc_expert_nll": nll} if nll_weight else {}),
            **discriminator_stats(torch.cat(logits), labelled, source)}


def anchor_weight(cfg: TrainConfig) -> float:
    """`--expert-nll`, for the token head only (which `config.check` allows in the airl form only): a preset's value
    is not applied to a head whose f is no log-probability (the scalar and hybrid heads' f has no likelihood)."""
    return cfg.expert_nll if cfg.head == "token" else 0.0


def make_reward_model(cfg: TrainConfig, policy, tokenizer) -> RewardModel:
    """M2: the reward model starts as a copy of the policy's weights, from its own backbone (`reward_init`), which
    must cut text into the same tokens, or as another run's trained reward model (`reward_from`)."""
    if cfg.reward_from:  # checked by `check_reward_from` before the run started
        return RewardModel.load(Path(cfg.reward_from).expanduser() / "reward", pick_device()[1]).train()
    if not cfg.reward_init:
        lm = copy.deepcopy(policy)
    else:
        lm, reward_tokenizer = load_lm(str(Path(cfg.reward_init).expanduser()), dtype=pick_device()[1])
        check_same_tokenizer(tokenizer, reward_tokenizer, f"--reward-init {cfg.reward_init}")
    return RewardModel(lm.train(), cfg.head)


def check_reward_from(cfg: TrainConfig, tokenizer=None) -> None:
    """Refuse, in one line and before any weights are loaded, a `cfg.reward_from` run whose reward model has another
    head, form or tokenizer (when `tokenizer` is given) than `cfg` trains with (its reward.json, config.json and
    backbone say which)."""
    folder = Path(cfg.reward_from).expanduser()
    if not (folder / "reward").is_dir():
        raise UserError(f"--reward-from {cfg.reward_from}: no reward model in that run (no reward/ inside)")
    head = RewardModel.saved_head(folder / "reward")
    form = saved_config(folder).get("form") if (folder / "config.json").is_file() else None
    if head != cfg.head or form not in (None, cfg.form):
        raise UsageError(f"--reward-from {cfg.reward_from} was trained with --head {head} --form "
                         f"{form or cfg.form}: give the same here")
    if tokenizer is not None:
        backbone = load_tokenizer(folder / "reward" / "backbone")
        check_same_tokenizer(tokenizer, backbone, f"--reward-from {cfg.reward_from}")


def warm_up_discriminator(cfg: TrainConfig, run: Run, reward_model: RewardModel, optimizer: torch.optim.Optimizer,
                          policy, tokenizer, demos: list[dict], rl_tasks: list[dict]) -> None:
    """M2 before PPO: `disc_warmup` steps on experts vs the starting policy's own samples (4 per problem) and
    perturbed experts (M3). The samples answer the demonstration problems (`warmup_questions="demos"`: those
    identical to their demonstration are dropped, M9) or RL problems (`"rl"`: a policy fine-tuned on the
    demonstrations has learned their answers by heart, so its samples of them say little about its errors)."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    source = demos if cfg.warmup_questions == "demos" else rl_tasks
    questions = [t["question"] for t in source[: cfg.warmup_pool]]
    with autocast(cfg.precision, next(policy.parameters()).device):
        pool = [sample for rows, batch in sample_answers(policy, tokenizer, questions, 4, cfg.max_new_tokens,
                                                        cfg.temperature, cfg.top_p)
                for sample in sampled(batch, tokenizer, [questions[i] for i in rows])]
    own_samples, _ = negatives(demos, pool, 0, rng)
    if not own_samples and cfg.perturbed_per_expert == 0:
        raise UserError("discriminator warm-up: every sample equals its demonstration and --perturbed-per-expert "
                        "is 0, so there is nothing to contrast the experts with; give --perturbed-per-expert 1")
    for step in run.progress(range(cfg.disc_warmup), "discriminator warm-up"):
        experts = rng.sample(demos, cfg.disc_batch)
        _, perturbed = negatives(experts, [], cfg.perturbed_per_expert, rng)
        stats = discriminator_step(reward_model, optimizer, policy, tokenizer, experts,
                                   rng.sample(own_samples, min(len(own_samples), cfg.disc_batch)), perturbed,
                                   cfg.form, cfg.label_smoothing, micro_batch_size=cfg.micro_batch_size,
                                   precision=cfg.precision, labels=cfg.perturbed_labels,
                                   change_share=cfg.change_share, nll_weight=anchor_weight(cfg))
        run.log({"warmup_step": step + 1, **stats})

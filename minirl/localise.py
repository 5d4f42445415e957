"""Error localisation (method.md M7): which token of a wrong trace does a score blame?

Two settings with known ground truth:
  - perturbed expert traces (M3): one rule changes an expert solution and records the character span of the first
    change, mapped here to tokens;
  - the policy's own wrong samples: the target is the first line that differs from the correct solution. Only
    meaningful in the synthetic world, whose correct solutions are deterministic text.
Three per-token scores: the learned reward f_t, the reward the policy is paid in the `airl` form f_t - log pi(y_t)
(M2), and the policy's own log-prob (the baseline); chance beside them. The final EOS token is never a candidate.

Two rules turn a score into a ranking of tokens (Hit@k: one of the first k is inside the target):
  - `lowest`: lowest score first (the paper's rule);
  - `first`: the tokens scoring below a threshold tau in reading order, then the rest lowest first. An error
    propagates (a wrong result makes every later step that uses it look wrong too), so the *first* clearly bad
    token is the better guess at where things went wrong. This is how process reward models are scored on
    first-error benchmarks (ProcessBench, Zheng et al. 2024). Each score gets its own tau, chosen (`calibrate`) on
    one half of the traces and applied to the other (`cross_fit`), so no trace is judged with a tau tuned on it.
Step@1 (the paper's step-interval view): the line chosen (lowest mean score, or holding the first flagged token)
overlaps the target.
"""

from __future__ import annotations

import math
import random
from math import comb

import torch

from minirl.config import TrainConfig, UsageError
from minirl.data import DataError, format_prompt, is_correct
from minirl.metrics import bootstrap_ci
from minirl.perturb import perturb
from minirl.rerank import score_texts
from minirl.rollout import check_fits_context, sample, sample_answers
from minirl.viz import split_steps

SCORES = ("reward", "reward_minus_logprob", "policy_logprob")
# candidate thresholds: these quantiles of the calibration traces' token scores (scale-free, so the same list
# serves log-probs, the token head's f and the scalar head's logits)
TAU_QUANTILES = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
# what `display_rewards` shows per token, by reward head (None: no reward model, the policy's log-prob instead)
SHOWN = {"token": "reward f - log pi per token", "hybrid": "reward f - log pi per token",
         "scalar": "reward z per token", None: "policy log-prob log pi per token"}


def char_to_token_span(tokens: list[str], span: tuple[int, int], eos: bool = True) -> tuple[int, int]:
    """Token range [start, end) overlapping the character span [span[0], span[1]) of the response text.

    `tokens` are decoded one id at a time; when `eos` the last one is the EOS (e.g. "<eos>"), which is not part of
    the response text and is never in the range. An empty span is widened to the one character at its start.
    """
    pieces = tokens[:-1] if eos else tokens
    text_len = sum(len(p) for p in pieces)
    lo, hi = span[0], max(span[1], span[0] + 1)
    if not 0 <= lo < hi <= text_len:
        raise ValueError(f"character span {span} is not inside the response text (length {text_len})")
    first = last = None
    offset = 0
    for i, piece in enumerate(pieces):
        if offset < hi and offset + len(piece) > lo:  # this token's characters overlap the span
            first = i if first is None else first
            last = i
        offset += len(piece)
    assert first is not None and last is not None
    return first, last + 1


def first_wrong_line_span(response: str, gold: str) -> tuple[int, int] | None:
    """Character span of the first line of `response` that differs from the same line of `gold`.

    An empty differing line is pointed at by its newline. None when the response equals the gold line for line, or
    stops early with every line it has right (a truncated prefix has no wrong line to point at).
    """
    gold_lines = gold.split("\n")
    start = 0
    for i, line in enumerate(response.split("\n")):
        if i >= len(gold_lines) or line != gold_lines[i]:
            end = start + len(line) if line else min(start + 1, len(response))
            return (start, end) if end > start else None
        start += len(line) + 1
    return None


def display_rewards(result: dict, head: str) -> list[float]:
    """The per-token reward shown to a user: f_t - log pi(y_t) for the `token` and `hybrid` heads (0 at init; the
    discriminator logit the policy is paid in the `airl` form, M2), the rewards as they are for `scalar`."""
    if result["rewards"] is None:
        raise ValueError("no rewards: score with a reward model")
    if head in ("token", "hybrid"):
        return [r - lp for r, lp in zip(result["rewards"], result["logprobs"], strict=True)]
    return list(result["rewards"])


def score_traces(policy, tokenizer, reward_model, question: str, traces: list[dict]) -> list[dict]:
    """Score responses to one question for display. Each trace is a dict with "text" and "span" (a character span
    to mark, or None); returned copies add "tokens", "scores" (`display_rewards`, or the policy's log-prob without
    a reward model) and "mark", the span as a token range (None when there is no span, or when the tokens, decoded
    one at a time, do not spell the text)."""
    head = reward_model.head_kind if reward_model is not None else None
    results = score_texts(policy, tokenizer, [question] * len(traces), [t["text"] for t in traces], reward_model)
    scored = []
    for trace, result in zip(traces, results, strict=True):
        tokens, span = result["tokens"], trace["span"]
        aligned = span is not None and "".join(tokens[:-1]) == trace["text"]
        scored.append({**trace, "tokens": tokens, "mark": char_to_token_span(tokens, span) if aligned else None,
                       "scores": display_rewards(result, head) if head else result["logprobs"]})
    return scored


def lowest(scores: list[float]) -> list[int]:
    """Token indices, lowest score first (ties: the earlier token first)."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


def first_below(scores: list[float], tau: float) -> list[int]:
    """The `first` rule: tokens scoring below `tau` in reading order, then the others lowest first."""
    return [i for i, s in enumerate(scores) if s < tau] + [i for i in lowest(scores) if scores[i] >= tau]


def hit_at_k(ranking: list[int], target: tuple[int, int], k: int) -> float:
    """1.0 if one of the first k tokens of `ranking` lies in the token range `target`, else 0.0."""
    return float(any(target[0] <= i < target[1] for i in ranking[:k]))


def lowest_mean_step(scores: list[float], steps: list[tuple[int, int]]) -> tuple[int, int]:
    """The step (line, a token range) with the lowest mean score: the paper's step-interval view."""
    means = [sum(scores[a:b]) / (b - a) for a, b in steps]
    return steps[means.index(min(means))]


def step_of(token: int, steps: list[tuple[int, int]]) -> tuple[int, int]:
    return next((a, b) for a, b in steps if a <= token < b)


def overlaps(step: tuple[int, int], target: tuple[int, int]) -> float:
    return float(step[0] < target[1] and target[0] < step[1])


def chance_hit_at_k(n_tokens: int, target: tuple[int, int], k: int) -> float:
    """Expected hit@k of k distinct tokens drawn uniformly from `n_tokens` (EOS excluded): 1 - C(n-m, k) / C(n, k)."""
    m = max(0, min(target[1], n_tokens) - target[0])
    k = min(k, n_tokens)
    return 1.0 - comb(n_tokens - m, k) / comb(n_tokens, k) if n_tokens > 0 else 0.0


def score_items(policy, tokenizer, reward_model, items: list[tuple[str, str, tuple[int, int], str]],
                batch_size: int = 16) -> list[dict]:
    """Score (question, response, character span of the error, kind) items with `rerank.score_texts`. One row per
    item: kind, target (token range), steps (token range of each line) and scores (name -> per-token list, the EOS
    left out). A trace whose tokens, decoded one at a time, do not spell its text (possible with some tokenizers)
    cannot be aligned and is left out."""
    rows = []
    for i in range(0, len(items), batch_size):
        chunk = items[i: i + batch_size]
        results = score_texts(policy, tokenizer, [q for q, *_ in chunk], [x for _, x, *_ in chunk], reward_model)
        for result, (_, response, span, kind) in zip(results, chunk, strict=True):
            tokens = result["tokens"]
            if len(tokens) < 2 or "".join(tokens[:-1]) != response:
                continue
            scores = {"policy_logprob": result["logprobs"]}
            if result["rewards"] is not None:
                scores |= {"reward": result["rewards"], "reward_minus_logprob": display_rewards(result, "token")}
            steps = split_steps(tokens[:-1], [0.0] * (len(tokens) - 1))
            rows.append({"kind": kind, "target": char_to_token_span(tokens, span),
                         "steps": [(a, b) for a, b, _ in steps], "scores": {k: s[:-1] for k, s in scores.items()}})
    return rows


def calibrate(rows: list[dict], name: str) -> float | None:
    """The `first` rule's threshold for score `name`: of every score value in `rows` taken as tau, the one whose first
    flagged token hits the target most often (ties: the middle one of the best). None without rows.

    Exact and fast: token j is the first one flagged exactly when s_j < tau <= min(s_0 .. s_j-1), an interval of
    tau, so each row marks the candidates that hit without ranking its tokens again."""
    values = sorted({v for row in rows for v in row["scores"][name]})
    if not values:
        return None
    candidates = torch.tensor(values, dtype=torch.float64)
    hits = torch.zeros(len(values))
    for row in rows:
        (start, end), scores = row["target"], row["scores"][name]
        hit = torch.zeros(len(values), dtype=torch.bool)
        before = math.inf  # min(s_0 .. s_j-1)
        for j, s in enumerate(scores):
            if start <= j < end:
                hit |= (candidates > s) & (candidates <= before)
            before = min(before, s)
        if start <= lowest(scores)[0] < end:  # tau <= every score flags nothing: the lowest rule
            hit |= candidates <= before
        hits += hit
    best = torch.nonzero(hits == hits.max()).flatten()
    return values[int(best[len(best) // 2])]


def summarise(rows: list[dict], names: tuple[str, ...] = SCORES) -> dict:
    """Mean Hit@1, Hit@3 and Step@1 of each score under the `lowest` rule (key: the score's name) and the `first`
    rule (key: name + "_first", where the row's "taus" has a threshold), chance beside them, and Hit@1 by kind.
    Without rows every score's figures are None."""
    per_row = []
    for row in rows:
        target, steps, taus = row["target"], row["steps"], row.get("taus", {})
        hits: dict[str, dict[str, float]] = {"hit@1": {}, "hit@3": {}, "step@1": {}}
        for name, scores in row["scores"].items():
            rules = {name: (lowest(scores), lowest_mean_step(scores, steps))}
            if taus.get(name) is not None:
                ranking = first_below(scores, taus[name])
                rules[f"{name}_first"] = (ranking, step_of(ranking[0], steps))
            for rule, (ranking, step) in rules.items():
                hits["hit@1"][rule], hits["hit@3"][rule] = hit_at_k(ranking, target, 1), hit_at_k(ranking, target, 3)
                hits["step@1"][rule] = overlaps(step, target)
        n_tokens = len(row["scores"]["policy_logprob"])
        hits["hit@1"]["chance"], hits["hit@3"]["chance"] = (chance_hit_at_k(n_tokens, target, k) for k in (1, 3))
        hits["step@1"]["chance"] = 1 / len(steps)
        per_row.append((row["kind"], hits))

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    keys = list(per_row[0][1]["hit@1"]) if per_row else [*names, "chance"]
    out: dict = {"n": len(rows)}
    for key in ("hit@1", "hit@3", "step@1"):
        out[key] = {name: mean([h[key][name] for _, h in per_row]) for name in keys}
    out["hit@1_ci"] = {name: bootstrap_ci([h["hit@1"][name] for _, h in per_row]) for name in keys}
    # does the reward beat its baseline? Paired per trace, the same rule for both (M7)
    out["hit@1_gain_over_logprob"] = {}
    for rule in ("reward", "reward_first"):
        if rule in keys and per_row:
            gains = [h["hit@1"][rule] - h["hit@1"][rule.replace("reward", "policy_logprob")] for _, h in per_row]
            out["hit@1_gain_over_logprob"][rule] = [mean(gains), *bootstrap_ci(gains)]
    kinds = sorted({kind for kind, _ in per_row})
    out["by_kind"] = {kind: {"n": sum(k == kind for k, _ in per_row),
                             **{name: mean([h["hit@1"][name] for k, h in per_row if k == kind]) for name in keys}}
                      for kind in kinds}
    return out


def perturbed_items(tasks: list[dict], n: int, seed: int = 0) -> list[tuple[str, str, tuple[int, int], str]]:
    """The first `n` tasks' expert answers, each perturbed by a random rule (M3): (question, text, span, rule)."""
    rng = random.Random(seed)
    return [(t["question"], *got) for t in tasks[:n] if (got := perturb(t["answer"], rng)) is not None]


@torch.no_grad()
def wrong_sample_items(policy, tokenizer, tasks: list[dict], n: int, max_new_tokens: int, seed: int = 0,
                       batch_size: int = 64) -> list[tuple[str, str, tuple[int, int], str]]:
    """The policy's wrong samples (T = 1, one per task, first `n` tasks), the target being the first line that
    differs from the correct solution. Ground truth only in the synthetic world, where the right solution is
    deterministic text; on GSM8K a right-but-differently-worded line would count as the error."""
    torch.manual_seed(seed)
    items = []
    tasks = tasks[:n]
    for rows, batch in sample_answers(policy, tokenizer, [t["question"] for t in tasks], 1, max_new_tokens,
                                      batch_size=batch_size):
        for i, text in zip(rows, batch.texts(tokenizer), strict=True):
            span = first_wrong_line_span(text, tasks[i]["answer"])
            if not is_correct(text, tasks[i]["answer"]) and span is not None:
                items.append((tasks[i]["question"], text, span, tasks[i].get("kind") or "all"))
    return items


def cross_fit(rows: list[dict], names: tuple[str, ...]) -> list[dict]:
    """Give every row the `first`-rule thresholds chosen on the *other* half of the rows (two folds, alternate
    rows), so that no row is judged with a threshold tuned on itself. Returns the thresholds of the two folds."""
    folds = [rows[0::2], rows[1::2]]
    taus = [{name: calibrate(folds[1 - i], name) for name in names} for i in range(2)]
    for i, fold in enumerate(folds):
        for row in fold:
            row["taus"] = taus[i]
    return taus


def localisation(policy, tokenizer, reward_model, tasks: list[dict], n: int, max_new_tokens: int, seed: int = 0,
                 own_samples: bool = True) -> dict:
    """Both settings on the first `n` held-out tasks ("samples" only when `own_samples`, else None), with the
    `first` rule's thresholds cross-fitted (`cross_fit`) and reported per fold."""
    names = SCORES if reward_model is not None else SCORES[2:]

    def setting(items: list) -> dict:
        rows = score_items(policy, tokenizer, reward_model, items)
        taus = cross_fit(rows, names)
        return {"thresholds": {name: [t[name] for t in taus] for name in names}, **summarise(rows, names)}

    perturbed = setting(perturbed_items(tasks, n, seed))
    if not own_samples:
        return {"perturbed": perturbed, "samples": None}
    samples = setting(wrong_sample_items(policy, tokenizer, tasks, n, max_new_tokens, seed))
    return {"perturbed": perturbed, "samples": {"sampled": min(n, len(tasks)), **samples}}


def traces_to_show(policy, tokenizer, cfg: TrainConfig, question: str, gold: str | None, response: str | None,
                   perturb_kind: str | None, seed: int, max_new_tokens: int) -> list[dict]:
    """The trace(s) `inspect` shows for one question, each {label, text, span, correct}. With --perturb: the expert
    (or given) trace and a perturbed copy, the change's characters as span (M3). Otherwise the given trace or one
    sample, with its first wrong line as span (synthetic world only: its right solutions are deterministic text)."""
    shown = response if response is not None or perturb_kind is None else gold  # None: a sample to draw
    what, extra = ("the question and trace", 0) if shown is not None else ("the question", max_new_tokens)
    check_fits_context(policy, tokenizer, [format_prompt(question, tokenizer) + (shown or "")], extra, what)
    if perturb_kind is not None:
        clean = response if response is not None else gold
        if clean is None:
            raise UsageError("--perturb needs an expert trace: give --question (or --trace) with it")
        got = perturb(clean, random.Random(seed), perturb_kind)
        if got is None:
            raise DataError(f"--perturb {perturb_kind}: the rule does not apply to this trace; try another")
        return [{"label": "expert trace" if response is None else "given trace", "text": clean, "span": None},
                {"label": f"perturbed ({perturb_kind})", "text": got[0], "span": got[1]}]
    label = "given trace"
    if response is None:
        torch.manual_seed(seed)
        batch = sample(policy, tokenizer, [format_prompt(question, tokenizer)], max_new_tokens, cfg.temperature,
                       cfg.top_p)
        response, label = batch.texts(tokenizer)[0], "sampled trace"
    wrong = gold is not None and not is_correct(response, gold)
    span = first_wrong_line_span(response, gold) if wrong and cfg.data == "synthetic" else None
    return [{"label": label, "text": response, "span": span, "correct": None if gold is None else not wrong}]


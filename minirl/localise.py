"""Error localisation (method.md M7): is the lowest-scoring token where the trace went wrong?

Two settings with known ground truth:
  - perturbed expert traces (M3): one rule changes an expert solution and records the character span of the first
    change; `localisation` maps it to tokens and asks whether the lowest-scoring token falls inside it;
  - the policy's own wrong samples (`localisation_on_samples`): the target is the first line that differs from the
    correct solution. Only meaningful in the synthetic world, whose correct solutions are deterministic text.
Each setting scores tokens three ways: the learned reward f_t, the reward the policy is paid in the `airl` form
f_t - log pi(y_t) (M2), and the policy's own log-prob (the baseline), beside chance. Hit@k: one of the k lowest
tokens is inside the target. The final EOS token is never a candidate.

Left out on purpose: step-level (line-sum) localisation; `viz.split_steps` gives the steps for that.
"""

from __future__ import annotations

import random
from math import comb

import torch

from minirl.data import format_prompt, is_correct, perturb
from minirl.ppo import sample
from minirl.rerank import score_texts
from minirl.viz import split_steps

SCORES = ("reward", "reward_minus_logprob", "policy_logprob")


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
    """The per-token reward shown to a user: f_t - log pi(y_t) for the `token` head (0 at initialisation; the
    discriminator logit the policy is paid in the `airl` form, M2), the rewards as they are for `scalar`."""
    if result["rewards"] is None:
        raise ValueError("no rewards: score with a reward model")
    if head == "token":
        return [r - lp for r, lp in zip(result["rewards"], result["logprobs"], strict=True)]
    return list(result["rewards"])


def hit_at_k(scores: list[float], target: tuple[int, int], k: int, exclude_last: bool = True) -> float:
    """1.0 if one of the k lowest-scoring tokens (ties: earliest first) lies in `target`, else 0.0."""
    candidates = range(len(scores) - 1 if exclude_last else len(scores))
    lowest = sorted(candidates, key=lambda i: (scores[i], i))[:k]
    return float(any(target[0] <= i < target[1] for i in lowest))


def step_hit(scores: list[float], steps: list[tuple[int, int, float]], target: tuple[int, int]) -> float:
    """Step-level Hit@1 (M7, the paper's step-interval view): 1.0 if the step (line) with the lowest
    mean token score overlaps the target token range. `steps` are (start, end) token ranges."""
    means = [sum(scores[a:b]) / (b - a) for a, b, _ in steps]
    a, b, _ = steps[means.index(min(means))]
    return float(a < target[1] and target[0] < b)


def chance_hit_at_k(n_tokens: int, target: tuple[int, int], k: int) -> float:
    """Expected hit@k of k distinct tokens drawn uniformly from `n_tokens` (EOS excluded): 1 - C(n-m, k) / C(n, k)."""
    m = max(0, min(target[1], n_tokens) - target[0])
    k = min(k, n_tokens)
    return 1.0 - comb(n_tokens - m, k) / comb(n_tokens, k) if n_tokens > 0 else 0.0


def measure(policy, tokenizer, reward_model, items: list[tuple[str, str, tuple[int, int], str]],
            batch_size: int = 16) -> dict:
    """Score (question, response, character span of the error, kind) items with `rerank.score_texts` in small
    batches; mean Hit@1 / Hit@3 per score and chance, Hit@1 per kind. A trace whose tokens, decoded one at a time,
    do not spell its text (possible with some tokenizers) cannot be aligned and is skipped."""
    names = [*(SCORES if reward_model is not None else SCORES[2:]), "chance"]
    rows: list[tuple[str, dict[str, dict[str, float]]]] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i: i + batch_size]
        results = score_texts(policy, tokenizer, [q for q, *_ in chunk], [x for _, x, *_ in chunk], reward_model)
        for result, (_, response, span, kind) in zip(results, chunk, strict=True):
            tokens, logprobs, rewards = result["tokens"], result["logprobs"], result["rewards"]
            if "".join(tokens[:-1]) != response:
                continue
            target = char_to_token_span(tokens, span)
            scores = {"policy_logprob": logprobs}
            if rewards is not None:
                scores |= {"reward": rewards, "reward_minus_logprob": display_rewards(result, "token")}
            hits = {f"hit@{k}": {name: hit_at_k(s, target, k) for name, s in scores.items()} for k in (1, 3)}
            for k in (1, 3):
                hits[f"hit@{k}"]["chance"] = chance_hit_at_k(len(tokens) - 1, target, k)
            steps = split_steps(tokens[:-1], logprobs[:-1])  # the lines of the trace, EOS left out
            hits["step@1"] = {name: step_hit(s, steps, target) for name, s in scores.items()}
            hits["step@1"]["chance"] = 1 / len(steps)
            rows.append((kind, hits))

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    out: dict = {"n": len(rows), "skipped": len(items) - len(rows)}
    for key in ("hit@1", "hit@3", "step@1"):
        out[key] = {name: mean([h[key][name] for _, h in rows]) for name in names}
    kinds = sorted({kind for kind, _ in rows})
    out["by_kind"] = {kind: {"n": sum(k == kind for k, _ in rows),
                             **{name: mean([h["hit@1"][name] for k, h in rows if k == kind]) for name in names}}
                      for kind in kinds}
    return out


def localisation(policy, tokenizer, reward_model, tasks: list[dict], n: int, seed: int = 0) -> dict:
    """Hit@1 / Hit@3 on the first `n` tasks' expert answers, each perturbed by a random rule (M3, M7)."""
    rng = random.Random(seed)
    items = [(t["question"], *got) for t in tasks[:n] if (got := perturb(t["answer"], rng)) is not None]
    return measure(policy, tokenizer, reward_model, items)


@torch.no_grad()
def localisation_on_samples(policy, tokenizer, reward_model, tasks: list[dict], n: int, max_new_tokens: int,
                            seed: int = 0, batch_size: int = 64) -> dict:
    """Hit@1 / Hit@3 on the policy's own wrong samples (T = 1, one per task, first `n` tasks), the target being the
    first line that differs from the correct solution. Ground truth only in the synthetic world, where the right
    solution is deterministic text; on GSM8K a right-but-differently-worded line would count as the error."""
    torch.manual_seed(seed)
    tasks = tasks[:n]
    items = []
    for i in range(0, len(tasks), batch_size):
        chunk = tasks[i: i + batch_size]
        batch = sample(policy, tokenizer, [format_prompt(t["question"], tokenizer) for t in chunk], max_new_tokens)
        for task, text in zip(chunk, batch.texts(tokenizer), strict=True):
            span = first_wrong_line_span(text, task["answer"])
            if not is_correct(text, task["answer"]) and span is not None:
                items.append((task["question"], text, span, task.get("kind") or "all"))
    return {"sampled": len(tasks), **measure(policy, tokenizer, reward_model, items)}

"""Reranking: sample N solutions per question, score them, keep the best (method.md M5, M7).

`evaluate` is the held-out evaluation every training run ends with (and checkpoints with);
`sample_and_score` produces one record per question (its N samples, their correctness,
the policy's mean token log-prob, and the reward model's per-token rewards); everything
else is computed from those records, which are saved as JSON lines so that metrics can be
recomputed without sampling again. `rerank_table` turns records into success@k|N for every
trace aggregator (and `f-logpi`, mean f minus mean log pi: the discriminator's logit in the
`airl` form, M2; under the `logit` form it is only a difference of two scores) beside the
baselines that could embarrass it: the random pick's expected accuracy, majority vote, the
policy's own log-prob, and the oracle.

Left out on purpose: tree search and step-level beam search; reranking here is best-of-N.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minirl import runs
from minirl.config import TrainConfig, config_from
from minirl.data import (
    DataError,
    extract_answer,
    format_prompt,
    is_correct,
    is_number,
    load_gsm8k,
    load_tasks,
    read_jsonl,
)
from minirl.logprobs import token_logprobs
from minirl.metrics import (
    auroc,
    bootstrap_ci,
    majority_success,
    pass_at_k,
    random_success_at_k,
    success_at_k,
    welch_t,
    within_question_auroc,
)
from minirl.models import RewardModel, autocast, context_length
from minirl.rollout import check_fits_context, encode, in_chunks, sample_answers

AGGREGATORS = ("mean", "sum", "min", "last", "discounted")


@torch.no_grad()
def sample_and_score(policy, tokenizer, tasks: list[dict], n: int, max_new_tokens: int,
                     reward_model: RewardModel | None = None, temperature: float = 1.0, top_p: float = 1.0,
                     batch_size: int = 256, progress: bool = True) -> list[dict]:
    """N samples per task, each with correctness, mean policy log-prob and per-token rewards."""
    policy.eval()
    records = [{"question": t["question"], "gold": t["answer"], "kind": t.get("kind"), "samples": []} for t in tasks]
    for rows, batch in sample_answers(policy, tokenizer, [t["question"] for t in tasks], n, max_new_tokens,
                                      temperature, top_p, batch_size, progress):
        mask = batch.response_mask.bool()
        logp = in_chunks(lambda b, _: token_logprobs(policy, b.input_ids, b.attention_mask), batch, 8)  # T = 1
        rewards = None if reward_model is None else in_chunks(
            lambda b, _: reward_model(b.input_ids, b.attention_mask), batch, 8)
        for row, (i, text) in enumerate(zip(rows, batch.texts(tokenizer))):
            ids = batch.input_ids[row][mask[row]].tolist()
            records[i]["samples"].append({
                "text": text,
                "answer": extract_answer(text),
                "correct": is_correct(text, tasks[i]["answer"]),
                "logprob": logp[row][mask[row]].mean().item(),
                "tokens": [tokenizer.decode([t]) for t in ids],
                "rewards": rewards[row][mask[row]].tolist() if rewards is not None else None,
            })
    return records


@torch.no_grad()
def score_texts(policy, tokenizer, questions: list[str], responses: list[str],
                reward_model: RewardModel | None = None) -> list[dict]:
    """Teacher-forced scoring of given responses: per response token its text piece, the
    policy's log-prob and (with a reward model) the learned reward f_t (M2, M7)."""
    device = next(policy.parameters()).device
    batch = encode(tokenizer, [format_prompt(q, tokenizer) for q in questions], responses).to(device)
    if (limit := context_length(policy)) and (n := int(batch.attention_mask.sum(1).max())) > limit:
        raise DataError(f"a question and response of {n} tokens: longer than the model's context of {limit}")
    mask = batch.response_mask.bool()
    logp = token_logprobs(policy.eval(), batch.input_ids, batch.attention_mask)
    rewards = reward_model.eval()(batch.input_ids, batch.attention_mask) if reward_model is not None else None
    out = []
    for row in range(len(questions)):
        ids = batch.input_ids[row][mask[row]].tolist()
        out.append({"tokens": [tokenizer.decode([t]) for t in ids], "logprobs": logp[row][mask[row]].tolist(),
                    "rewards": rewards[row][mask[row]].tolist() if rewards is not None else None})
    return out


def aggregate(rewards: list[float], tokens: list[str], how: str, gamma: float = 0.9) -> float:
    """One score per trace from its token rewards (M5). `discounted` is the paper's selector:
    the discounted reward-to-go G_t = sum_{k>=t} gamma^(k-t) r_k, averaged over the answer
    part of the trace (from the line holding `####`; the last line when there is none)."""
    if not rewards:
        return float("-inf")
    if how == "mean":
        return sum(rewards) / len(rewards)
    if how == "sum":
        return sum(rewards)
    if how == "min":
        return min(rewards)
    if how == "last":
        return rewards[-1]
    if how != "discounted":
        raise ValueError(f"unknown aggregator {how!r}; choose from {', '.join(AGGREGATORS)}")
    to_go, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        to_go[t] = running
    text = "".join(tokens)
    marker = text.rfind("####")
    line_start = text.rfind("\n", 0, marker if marker >= 0 else len(text.rstrip("\n"))) + 1
    ends = [sum(len(t) for t in tokens[: i + 1]) for i in range(len(tokens))]  # char end of each token
    start = next((i for i, end in enumerate(ends) if end > line_start), 0)
    window = to_go[start:] or to_go
    return sum(window) / len(window)


def question_scores(record: dict, method: str) -> list[float]:
    """The score of each of a question's samples under `method` (a reward aggregator,
    `f-logpi`, `logprob`, or `oracle`)."""
    samples = record["samples"]
    if method == "logprob":
        return [s["logprob"] for s in samples]
    if method == "oracle":
        return [float(s["correct"]) for s in samples]
    if method == "f-logpi":  # M2 `airl` form: the discriminator's logit f - log pi, what PPO is paid, per token
        return [aggregate(s["rewards"], s["tokens"], "mean") - s["logprob"] for s in samples]
    return [aggregate(s["rewards"], s["tokens"], method) for s in samples]


def rerank_table(records: list[dict], ks: tuple[int, ...] = (1, 4, 8),
                 auroc_intervals: tuple[str, ...] = ()) -> dict:
    """{method: {"success@k": ..., "success@k_ci": [lo, hi], "auroc": ..., ...}} (M5, M7); the methods named in
    `auroc_intervals` also get bootstrap intervals over questions of both AUROCs ("auroc_ci", "auroc_pooled_ci")."""
    n = min(len(r["samples"]) for r in records)
    ks = tuple(k for k in ks if k <= n)
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    table: dict[str, dict] = {}

    def add(method: str, per_question: dict[int, list[float]]) -> None:
        row = table.setdefault(method, {})
        for k, values in per_question.items():
            row[f"success@{k}"] = sum(values) / len(values)
            row[f"success@{k}_ci"] = list(bootstrap_ci(values))

    add("random", {k: [random_success_at_k(c, k) for c in correct] for k in ks})
    add("majority", {1: [majority_success([s["answer"] for s in r["samples"]], c) for r, c in zip(records, correct)]})
    has_reward = records[0]["samples"][0]["rewards"] is not None
    methods = ["logprob", "oracle"] + ([*AGGREGATORS, "f-logpi"] if has_reward else [])
    for method in methods:
        scores = [question_scores(r, method) for r in records]
        add(method, {k: [success_at_k(s, c, k) for s, c in zip(scores, correct)] for k in ks})
        if method != "oracle":
            flat_s = [x for s in scores for x in s]
            flat_c = [x for c in correct for x in c]
            groups = [q for q, s in enumerate(scores) for _ in s]
            within, n_q = within_question_auroc(flat_s, flat_c, groups)
            table[method].update({"auroc": within, "auroc_questions": n_q, "auroc_pooled": auroc(flat_s, flat_c),
                                  "welch_t": welch_t([x for x, c in zip(flat_s, flat_c) if c],
                                                     [x for x, c in zip(flat_s, flat_c) if not c])})
            if method in auroc_intervals:
                per_question = list(zip(scores, correct))
                table[method]["auroc_ci"] = list(bootstrap_ci(per_question, statistic=within_auroc))
                table[method]["auroc_pooled_ci"] = list(bootstrap_ci(per_question, statistic=pooled_auroc))
    table["pass@k"] = {f"pass@{k}": sum(pass_at_k(len(c), sum(c), k) for c in correct) / len(correct) for k in ks}
    return table


def pooled_auroc(per_question: list[tuple[list[float], list[bool]]]) -> float:
    """AUROC over all samples of (scores, correct) per question, pooled (M7)."""
    return auroc([x for s, _ in per_question for x in s], [y for _, c in per_question for y in c])


def within_auroc(per_question: list[tuple[list[float], list[bool]]]) -> float:
    """Mean within-question AUROC of (scores, correct) per question (M7)."""
    groups = [q for q, (s, _) in enumerate(per_question) for _ in s]
    return within_question_auroc([x for s, _ in per_question for x in s], [y for _, c in per_question for y in c],
                                 groups)[0]


def by_kind(records: list[dict], methods: tuple[str, ...] = ("mean", "logprob")) -> dict[str, dict]:
    """Best-of-N and within-question AUROC per problem kind (synthetic world: each kind is
    tied to its misconceptions, so this shows which errors a score catches)."""
    kinds = sorted({r["kind"] for r in records if r.get("kind")})
    out = {}
    for kind in kinds:
        table = rerank_table([r for r in records if r.get("kind") == kind], ks=(1,))
        row = {"questions": sum(r.get("kind") == kind for r in records), "random": table["random"]["success@1"]}
        for m in methods:
            if m in table:
                row.update({f"bo_{m}": table[m]["success@1"], f"auroc_{m}": table[m]["auroc"]})
        out[kind] = row
    return out


def save_records(records: list[dict], path: str | Path) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def load_records(path: str | Path) -> list[dict]:
    """Records saved by `save_records`; a file that is not such records is refused in one line naming it."""
    path = Path(path)
    records = []
    for i, record in read_jsonl(path):
        problem = record_problem(record)
        if problem:
            raise DataError(f"{path}:{i}: not a sample record ({problem})")
        records.append(record)
    if not records:
        raise DataError(f"{path}: no records (save some with `minirl rerank --samples`)")
    return records


# each sample's fields as `sample_and_score` writes them: (test, what the field must be)
SAMPLE_FIELDS = {
    "correct": (lambda v: isinstance(v, bool), "true or false"),
    "answer": (lambda v: v is None or is_number(v), "a number or null"),
    "logprob": (is_number, "a number"),
    "tokens": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
    "rewards": (lambda v: v is None or isinstance(v, list) and all(map(is_number, v)),
                "a list of numbers, or null without a reward model"),
}


def record_problem(record) -> str | None:
    """What keeps `record` from being a question's record as `sample_and_score` writes it (at least one sample,
    each with SAMPLE_FIELDS of the right types); None when nothing does."""
    samples = record.get("samples") if isinstance(record, dict) else None
    if not isinstance(samples, list) or not samples:
        return "'samples' must be a non-empty list"
    for j, sample in enumerate(samples, 1):
        if not isinstance(sample, dict):
            return f"sample {j} is not an object"
        for key, (ok, what) in SAMPLE_FIELDS.items():
            if key not in sample:
                return f"sample {j} has no {key!r}"
            if not ok(sample[key]):
                return f"sample {j}: {key!r} must be {what}"
    return None


def evaluate(cfg: TrainConfig, policy, tokenizer, tasks: list[dict], reward_model: RewardModel | None = None,
             records_path: Path | None = None, progress: bool = False) -> dict:
    """Held-out figures on `tasks`: greedy and sampled accuracy, pass@k, maj@k, best-of-k by reward and by
    log-prob beside the random pick, and AUROCs against correctness (M5, M7); k = `cfg.eval_samples`."""
    torch.manual_seed(cfg.seed + 12345)
    questions, k = [t["question"] for t in tasks], cfg.eval_samples
    policy.eval()
    with autocast(cfg.precision, next(policy.parameters()).device):  # as in training (models.autocast)
        greedy_right = sum(is_correct(text, tasks[i]["answer"]) for rows, batch in sample_answers(
            policy, tokenizer, questions, 1, cfg.max_new_tokens, temperature=0.0, batch_size=cfg.eval_batch)
            for i, text in zip(rows, batch.texts(tokenizer)))
        records = sample_and_score(policy, tokenizer, tasks, k, cfg.max_new_tokens, reward_model, cfg.temperature,
                                   cfg.top_p, batch_size=cfg.eval_batch, progress=progress)
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


def sample_records(run: str, reward_from: str, data: str, questions: int, n: int, max_new_tokens: int,
                   seed: int) -> list[dict]:
    """`rerank`'s records: n samples for each of the first `questions` questions (the run's held-out set, or a
    GSM8K file), scored by the run's reward model or `reward_from`'s."""
    policy, tokenizer, reward_model, config = runs.load_run(run, reward_from or None)
    if reward_model is None:
        runs.console.print("[yellow]no reward model in this run: only the baselines are shown[/]")
    cfg = config_from(config, f"{run}/config.json")
    tasks = load_gsm8k(data) if data else load_tasks(cfg)["test"]
    where = data or f"{run}'s held-out set"
    if len(tasks) < questions:
        raise DataError(f"{where}: {len(tasks)} problems, fewer than --questions {questions}")
    max_new_tokens = max_new_tokens or cfg.max_new_tokens
    check_fits_context(policy, tokenizer, [format_prompt(t["question"], tokenizer) for t in tasks[:questions]],
                       max_new_tokens, f"{where}: a question")
    torch.manual_seed(seed)
    return sample_and_score(policy, tokenizer, tasks[:questions], n, max_new_tokens, reward_model, cfg.temperature,
                            cfg.top_p)

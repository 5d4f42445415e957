"""The sample pool of `minirl train --algo reward` (method.md M10): the starting policy's answers, drawn once.

Sampling a real model on a CPU is the slow part (~2 s per SmolLM2 answer), so the answers are kept in the run
folder (`pool.jsonl`, one JSON line per answer, keyed by the settings they depend on) and reused: a rerun, a
--resume or a larger pool samples only what is missing, and a crash loses at most one chunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minirl import runs
from minirl.config import TrainConfig
from minirl.data import DataError, is_correct
from minirl.models import autocast
from minirl.rollout import sample_answers
from minirl.runs import Run


def pool_key(cfg: TrainConfig) -> str:
    """What a pooled sample depends on: a pool drawn under other settings is not reused."""
    return json.dumps([cfg.init, cfg.gguf_file, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.seed,
                       cfg.data, cfg.test_data])


def sample_pool(cfg: TrainConfig, run: Run, policy, tokenizer, split: str, tasks: list[dict], n: int) -> list[dict]:
    """`n` answers of the policy to each of `tasks`, read from `pool.jsonl` where already drawn there; the missing
    questions are sampled in chunks, each appended to the file as it is done (an interruption loses one chunk)."""
    path, key = run.folder / "pool.jsonl", pool_key(cfg)
    have = {r["question"] for r in pooled(read_pool(path, repair=True), cfg, split, len(tasks))}
    missing = [i for i in range(len(tasks)) if i not in have]
    if missing:
        runs.console.print(f"sampling {len(missing)} {split} problems x {n} answers for the pool")
        torch.manual_seed(cfg.seed + len(have))
        with autocast(cfg.precision, next(policy.parameters()).device), open(path, "a") as f:
            for rows, batch in sample_answers(policy, tokenizer, [tasks[i]["question"] for i in missing], n,
                                              cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.eval_batch,
                                              progress=True):
                for row, text, (prompt_ids, response_ids) in zip(rows, batch.texts(tokenizer), batch.token_ids()):
                    i = missing[row]
                    f.write(json.dumps({"key": key, "split": split, "question": i, "text": text,
                                        "correct": is_correct(text, tasks[i]["answer"]), "prompt_ids": prompt_ids,
                                        "response_ids": response_ids}) + "\n")
                f.flush()
    return pooled(read_pool(path), cfg, split, len(tasks))


def pooled(rows: list[dict], cfg: TrainConfig, split: str, n_tasks: int) -> list[dict]:
    """The pool's answers to the first `n_tasks` problems of `split`, drawn under `cfg`'s sampling settings."""
    key = pool_key(cfg)
    return [r for r in rows if r["key"] == key and r["split"] == split and r["question"] < n_tasks]


# a pool row as `sample_pool` writes it: its keys and their types
POOL_ROW = {"key": str, "split": str, "question": int, "text": str, "correct": bool, "prompt_ids": list,
            "response_ids": list}


def read_pool(path: Path, repair: bool = False) -> list[dict]:
    """The pooled samples in `path` (none when it is missing). A line cut short by a crash mid-write is skipped; with
    `repair` (the writer, `sample_pool`, before it appends) the file is also rewritten without it, so that what is
    appended next starts on a line of its own, while readers of a finished run leave its file as it is. A line of
    JSON that is no pool row cannot come from a crash: it is refused in one line, not skipped, since skipping it
    would quietly change what is trained and reported."""
    if not path.exists():
        return []
    try:
        lines, good = path.read_text(encoding="utf-8").splitlines(), []
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not is_pool_row(row):
            raise DataError(f"{path}:{n}: not a pool row (an object with {', '.join(POOL_ROW)}, as minirl writes "
                            "them); remove that line")
        good.append(row)
    if repair and len(good) < len(lines):
        runs.write_atomic(path, "".join(json.dumps(r) + "\n" for r in good))
    return good


def is_pool_row(row) -> bool:
    """Does `row` have POOL_ROW's keys and types (a question number >= 0, token ids that are integers)?"""
    return (isinstance(row, dict) and all(isinstance(row.get(k), t) for k, t in POOL_ROW.items())
            and not isinstance(row["question"], bool) and row["question"] >= 0
            and all(isinstance(i, int) for i in row["prompt_ids"] + row["response_ids"]))

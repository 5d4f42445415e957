"""Data: GSM8K loading, answer checking, perturbed experts (M3), and prompt formatting.

A task is a plain dict `{"question": str, "answer": str}` (the answer is a step-by-step
solution ending in `#### n`), whether it comes from GSM8K or from the synthetic world
(`minirl.world`). Everything downstream (training, sampling, scoring) formats prompts with
`format_prompt`, so a prompt looks the same wherever it is used.

Left out on purpose: other data sets, and any answer format but GSM8K's.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path

from minirl.config import TrainConfig, UsageError, UserError
from minirl.world import make_world

# One number, written whole: a sign and a `$` may lead; thousands come in groups of three (1,234 and 12,345,678, never
# 7,2); decimals may follow (3.5, .5). It must not touch a letter or a digit, nor a `.`, `,`, `/`, `-` or space that
# glues it to more digits, so 7,2  1/2  1e3  10-3  3.5.6  1 000 are never read as a piece of themselves.
NUMBER = re.compile(r"(?<![\w.,/-])(?<!\d )-?\$?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?![\w/]|[.,]\d)")
# A number with more digits than this is no answer a solution could hold: it is never read as one (`extract_answer`),
# a gold answer with one is refused, and it is never perturbed (int() of over 4300 digits raises, float() gives inf).
MAX_DIGITS = 30


class DataError(UserError):
    """Bad input data: the CLI prints it as one line."""


# ---------------------------------------------------------------- GSM8K

def load_gsm8k(source: str) -> list[dict[str, str]]:
    """`source` is a local JSONL file, or a split of the hub data set ("train" / "test")."""
    path = Path(source)
    if path.suffix == ".jsonl" or path.exists():
        return read_jsonl_tasks(path)
    if source not in ("train", "test"):
        raise DataError(f"{source}: no such file (give a .jsonl path, or the split 'train' or 'test')")
    from datasets import load_dataset  # only for users with the hub

    try:
        rows = load_dataset("openai/gsm8k", "main", split=source)
    except Exception as e:  # network or hub errors: one readable line
        raise DataError(f"cannot load openai/gsm8k ({source}) from the hub: {type(e).__name__}") from None
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def strip_calculator(text: str) -> str:
    """GSM8K's calculator annotations removed: "48/2 = <<48/2=24>>24" -> "48/2 = 24". A chat model never writes
    them, so a discriminator shown them in every expert trace learns to spot them rather than good reasoning (the
    surface-feature failure of M2)."""
    return re.sub(r"<<[^<>]*>>", "", text)


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed JSON) of every non-empty line; a missing file, a folder, non-UTF-8 text or a line that is
    not JSON is one DataError naming the file (and line). A leading UTF-8 byte order mark is skipped. Lines end at
    "\n" (and "\r\n") only, never at the other breaks `str.splitlines` knows (U+2028, U+0085, form feed...), which
    a JSON string may hold as they are."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file (give a .jsonl file)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:  # text mode turns "\r\n" into "\n"
        lines = path.read_text(encoding="utf-8").removeprefix("\ufeff").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    rows = []
    for i, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError:
                raise DataError(f"{path}:{i}: not valid JSON") from None
    return rows


def is_number(value: object) -> bool:
    """A JSON number (NaN and infinities included, as Python's json writes them); true and false are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_jsonl_tasks(path: Path) -> list[dict[str, str]]:
    """The tasks of a GSM8K-format file; a row that is not one (no question, no readable final number) is one
    DataError naming its file and line."""
    tasks = []
    for i, row in read_jsonl(path):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("question", "answer")):
            raise DataError(f"{path}:{i}: needs string fields 'question' and 'answer'")
        if not row["question"].strip():
            raise DataError(f"{path}:{i}: the question is empty")
        number = final_number(row["answer"])
        if number is None:  # no reply could ever be judged right against it
            raise DataError(f"{path}:{i}: the answer has no final number (GSM8K ends it with '#### n')")
        if count_digits(number) > MAX_DIGITS:
            raise DataError(f"{path}:{i}: the final number has {count_digits(number)} digits, more than the "
                            f"{MAX_DIGITS} an answer may have")
        tasks.append({"question": row["question"], "answer": row["answer"]})
    if not tasks:
        raise DataError(f"{path}: no tasks in file")
    return tasks


def load_tasks(cfg: TrainConfig) -> dict[str, list[dict]]:
    """{"demos", "rl", "test", "valid", "corpus"}: the synthetic world, or GSM8K split by `cfg`. RL prompts are never
    demonstration problems, or AIRL turns into disguised imitation (M9). The best checkpoint is chosen on "valid"
    (`eval_questions` problems, disjoint from the rest), so that "test", the reported evaluation, never picks it.

    No question is in two parts. A question that the --data file repeats is kept once (its first row), so that its
    copies cannot land on both sides of the held-out split; --test-data that is the --data file, or that shares any
    question with it, is refused: its score would not be a held-out one. Questions are compared with their runs of
    white space made one space."""
    if cfg.data == "synthetic":
        return synthetic_tasks(cfg.seed, n_demos=cfg.n_demos, n_corpus=cfg.n_corpus, n_valid=cfg.eval_questions,
                               misconception_rate=cfg.misconception_rate, leave_out=cfg.leave_out or None)
    if cfg.test_data and _same_data(cfg.data, cfg.test_data):
        raise DataError(f"--test-data {cfg.test_data} is the --data file itself: every test problem would be a "
                        f"training problem; give a file of other problems, or leave --test-data out")
    train = first_of_each_question(load_gsm8k(str(Path(cfg.data).expanduser())))
    random.Random(cfg.seed).shuffle(train)
    held_out = cfg.eval_questions + (0 if cfg.test_data else cfg.final_questions)  # taken from the shuffled tail
    if len(train) <= held_out:
        if cfg.test_data:
            flags, fix = f"--eval-questions {cfg.eval_questions}", "lower it"
        else:
            flags = f"--eval-questions {cfg.eval_questions}, --final-questions {cfg.final_questions}"
            fix = "lower them or give --test-data"
        raise DataError(f"{cfg.data}: {len(train)} problems, and {held_out} of them are held out for evaluation "
                        f"({flags}), none left to train on; {fix}")
    train, valid = train[: -cfg.eval_questions], train[-cfg.eval_questions:]
    if cfg.test_data:
        test = load_test_data(cfg, train + valid)
    else:  # hold out the tail of the shuffled training set
        train, test = train[: -cfg.final_questions], train[-cfg.final_questions:]
    if not cfg.calculator_annotations:
        train, test, valid = ([{**t, "answer": strip_calculator(t["answer"])} for t in part]
                              for part in (train, test, valid))
    return {"demos": train[: cfg.n_demos], "rl": train[cfg.n_demos:], "test": test, "valid": valid, "corpus": train}


def _same_data(data: str, test_data: str) -> bool:
    """True when both name one file (through `~`, `..` or a link), or one hub split."""
    return os.path.realpath(os.path.expanduser(data)) == os.path.realpath(os.path.expanduser(test_data))


def _question_key(question: str) -> str:
    return " ".join(question.split())


def first_of_each_question(tasks: list[dict]) -> list[dict]:
    """`tasks` without the repeats of a question (its first task kept), in their order."""
    seen: set[str] = set()
    kept = []
    for t in tasks:
        if (key := _question_key(t["question"])) not in seen:
            seen.add(key)
            kept.append(t)
    return kept


def load_test_data(cfg: TrainConfig, train: list[dict]) -> list[dict]:
    """--test-data's problems; any of them also in --data (`train`) is refused, naming how many."""
    test = load_gsm8k(str(Path(cfg.test_data).expanduser()))
    seen = {_question_key(t["question"]) for t in train}
    shared = sum(_question_key(t["question"]) in seen for t in first_of_each_question(test))
    if shared:
        raise DataError(f"--test-data {cfg.test_data} holds {shared} question{'s' * (shared > 1)} that "
                        f"{'are' if shared > 1 else 'is'} also in --data {cfg.data}: held-out problems must be new "
                        f"to training; remove them from one of the files")
    return test


def check_sizes(cfg: TrainConfig, tasks: dict[str, list[dict]]) -> None:
    """Refuse, in one line naming the data, a data set too small for what `cfg` asks of it."""
    synthetic = cfg.data == "synthetic"
    error, where = (UsageError, "the synthetic world") if synthetic else (DataError, cfg.data)
    if not synthetic:
        check_n_demos(cfg, len(tasks["corpus"]))
    if cfg.algo == "reward":  # the reward model alone is evaluated on test problems throughout
        flag, wanted = "--eval-questions", cfg.eval_questions
    else:  # a policy meets them only in the final evaluation ("valid" before)
        flag, wanted = "--final-questions", cfg.final_questions
    if len(tasks["test"]) < wanted:
        raise error(f"{cfg.test_data if cfg.test_data and not synthetic else where}: {len(tasks['test'])} held-out "
                    f"problems, fewer than the evaluation asks for ({flag} {wanted})")
    if cfg.algo in ("airl", "outcome") and len(tasks["rl"]) < cfg.prompts_per_iter:
        raise error(f"{where}: {len(tasks['rl'])} problems for RL prompts, fewer than --prompts-per-iter "
                    f"{cfg.prompts_per_iter}")
    if cfg.algo in ("airl", "reward") and len(tasks["demos"]) < cfg.disc_batch:
        raise error(f"{where}: {len(tasks['demos'])} demonstrations, fewer than --disc-batch {cfg.disc_batch}")


def check_n_demos(cfg: TrainConfig, n_train: int) -> None:
    """GSM8K: --n-demos must leave RL prompts to the algorithms that use them (airl, outcome), as RL prompts are
    never demonstrations. SFT and the reward alone take all `n_train` training problems (those not held out) when
    asked for more, and say so. pretrain reads no demonstrations."""
    if cfg.algo in ("airl", "outcome") and cfg.n_demos >= n_train:
        raise DataError(f"{cfg.data}: --n-demos {cfg.n_demos} takes all {n_train} training problems (those not held "
                        f"out), leaving none for RL prompts, which are never demonstrations; lower --n-demos below "
                        f"{n_train}")
    if cfg.algo in ("sft", "reward") and cfg.n_demos > n_train:
        print(f"note: --n-demos {cfg.n_demos}, but {cfg.data} has {n_train} training problems (those not held out): "
              f"all {n_train} are demonstrations", file=sys.stderr)


def synthetic_tasks(seed: int = 0, **world_kwargs) -> dict[str, list[dict]]:
    """The synthetic world (minirl.world) as tasks: "demos" (clean expert solutions),
    "corpus" (the pretraining corpus, misconceptions applied), "rl" (the corpus problems
    with their correct solutions, as RL prompts), "test" (held-out problems) and "valid"
    (the problems the best checkpoint is chosen on)."""
    world = make_world(seed, **world_kwargs)

    def task(p, answer: str) -> dict:
        return {"question": p.question, "answer": answer, "kind": p.kind, "cues": p.cues}

    return {"demos": [task(p, p.solution()) for p in world.demos],
            "corpus": [task(p, sol) for p, sol in world.corpus],
            "rl": [task(p, p.solution()) for p, _ in world.corpus],
            "test": [task(p, p.solution()) for p in world.test],
            "valid": [task(p, p.solution()) for p in world.valid]}


# ---------------------------------------------------------------- answers

def extract_answer(text: str) -> float | None:
    """The final answer of a solution or a model's reply, or None when it cannot be read for sure.

    With a `####` marker, the answer is the first non-empty line after the LAST `####`: one `NUMBER` at its start,
    then at most a period or words without digits: `#### 72`, `#### 1,234`, `#### -5`, `#### $18.`, `#### 3.5`,
    `#### 18 books.` Anything else there (`7,2`, `1/2`, `1e3`, `1 000`, `10-3`, nothing) is None, never a number
    from elsewhere in the text. Without a marker, it is the last `NUMBER` in the text ("The answer is 42" -> 42), and
    None if any digit comes after it ("... is 7,2"). A Unicode minus sign (U+2212) counts as `-`. A number of more
    than `MAX_DIGITS` digits is None too: no answer is that long.
    """
    number = final_number(text)
    if number is None or count_digits(number) > MAX_DIGITS:
        return None
    return float(number.replace(",", "").replace("$", ""))


def final_number(text: str) -> str | None:
    """The final answer of `text` as written (`extract_answer`'s rules, whatever its length), or None."""
    text = text.replace("\u2212", "-")
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip().split("\n", 1)[0]  # the first non-empty line after the last ####
        m = NUMBER.match(text)  # the number must open the line
    else:
        found = list(NUMBER.finditer(text))
        m = found[-1] if found else None
    if m is None or any(c.isdigit() for c in text[m.end():]):  # words may follow the number, more digits may not
        return None
    return m.group()


def count_digits(number: str) -> int:
    return sum(c.isdigit() for c in number)


def is_correct(completion: str, gold: str) -> bool:
    """True when both answers can be read (`extract_answer`) and are equal; an unreadable side is never correct."""
    pred, want = extract_answer(completion), extract_answer(gold)
    return pred is not None and want is not None and abs(pred - want) < 1e-6


# ---------------------------------------------------------------- prompts

PLAIN_TEMPLATE = "Question: {question}\nAnswer: "
SYSTEM = "Solve the math problem step by step. End with '#### ' and the final number."


def format_prompt(question: str, tokenizer) -> str:
    """The chat template for instruct models, a plain template for tiny models."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PLAIN_TEMPLATE.format(question=question)

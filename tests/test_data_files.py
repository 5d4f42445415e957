"""Tests for minirl.data on bad input: odd files, odd rows, numbers too long to be answers, and GSM8K splits that
would let a training problem into a held-out part or a demonstration into the RL prompts."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from minirl.config import TrainConfig
from minirl.data import (
    MAX_DIGITS,
    DataError,
    check_sizes,
    extract_answer,
    is_correct,
    load_gsm8k,
    load_tasks,
    read_jsonl_tasks,
)
from minirl.perturb import PERTURBATIONS, perturb

HUGE = "9" * 5000  # over the 4300 digits int() converts


def one_line_error(call, *args) -> str:
    with pytest.raises(DataError) as err:
        call(*args)
    msg = str(err.value)
    assert "\n" not in msg, "a DataError is printed as one line"
    return msg


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows), encoding="utf-8")
    return path


def problems(name: str, n: int) -> list[tuple[str, str]]:
    return [(f"{name}: Tom has {i} pens and buys 4. How many?", f"{i}+4 = {i + 4}\n#### {i + 4}") for i in range(n)]


# ---------------------------------------------------------------- numbers too long to be an answer


def test_a_gold_answer_too_long_to_be_a_number_is_refused(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "huge.jsonl", [("q1", "#### 1"), ("q2", f"it is {HUGE}\n#### {HUGE}")])
    msg = one_line_error(read_jsonl_tasks, path)
    assert str(path) in msg and ":2:" in msg and "5000 digits" in msg
    write_rows(path, [("q", "#### " + "1" * (MAX_DIGITS + 1))])
    assert ":1:" in one_line_error(load_gsm8k, str(path))
    write_rows(path, [("q", "#### " + "1" * MAX_DIGITS)])  # as long as an answer may be
    assert len(read_jsonl_tasks(path)) == 1


@pytest.mark.parametrize("reply", [f"#### {HUGE}", f"The answer is {HUGE}", "#### " + "9" * 400,
                                   "#### " + "1" * (MAX_DIGITS + 1)],
                         ids=["marker-5000-digits", "no-marker-5000-digits", "marker-400-digits", "marker-31-digits"])
def test_a_reply_with_a_number_too_long_is_no_answer(reply: str) -> None:
    assert extract_answer(reply) is None  # never inf, never a crash
    assert not is_correct(reply, reply)


@pytest.mark.parametrize("kind", [None, *PERTURBATIONS])
def test_perturbing_a_solution_with_a_huge_number_never_crashes(kind: str | None) -> None:
    text = f"He has {HUGE} pens and 3 cups: 4+5 = <<4+5={HUGE}>>{HUGE} things.\n#### {HUGE}"
    for seed in range(10):
        got = perturb(text, random.Random(seed), kind)
        if got is not None:
            assert got[0] != text and "inf" not in got[0]
            assert HUGE in got[0]  # a number that long is never one that changes


# ---------------------------------------------------------------- odd files


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_text('\ufeff{"question": "q1", "answer": "#### 1"}\n{"question": "q2", "answer": "#### 2"}\n',
                    encoding="utf-8")
    assert [t["question"] for t in read_jsonl_tasks(path)] == ["q1", "q2"]


def test_unicode_line_breaks_inside_a_json_string_are_kept(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 may stand as they are in a JSON string: the line goes on, and the line numbers
    after it stay right."""
    question = "Tom has 3 pens.\u2028He buys 4.\u2029How\x85many?"
    path = tmp_path / "breaks.jsonl"
    path.write_text(json.dumps({"question": question, "answer": "#### 7"}, ensure_ascii=False) + "\r\n"
                    + json.dumps({"question": "q2", "answer": "#### 2"}) + "\r\n", encoding="utf-8")
    assert [t["question"] for t in read_jsonl_tasks(path)] == [question, "q2"]
    with path.open("a", encoding="utf-8") as f:
        f.write("{not json}\n")
    assert ":3: not valid JSON" in one_line_error(read_jsonl_tasks, path)


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    for call, arg in ((read_jsonl_tasks, folder), (load_gsm8k, str(folder))):
        msg = one_line_error(call, arg)
        assert str(folder) in msg and "is a folder, not a file" in msg and "no such file" not in msg


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_an_empty_question_is_refused(tmp_path: Path, question: str) -> None:
    path = write_rows(tmp_path / "empty-q.jsonl", [("q1", "#### 1"), (question, "#### 2")])
    msg = one_line_error(read_jsonl_tasks, path)
    assert str(path) in msg and ":2:" in msg and "question is empty" in msg


# ---------------------------------------------------------------- GSM8K splits


def gsm8k_config(tmp_path: Path, train: list[tuple[str, str]], test: list[tuple[str, str]] | None = None,
                 **kw) -> TrainConfig:
    data = write_rows(tmp_path / "train.jsonl", train)
    test_data = str(write_rows(tmp_path / "test.jsonl", test)) if test is not None else ""
    return TrainConfig(data=str(data), test_data=test_data, **{"n_demos": 2, "eval_questions": 2,
                                                                "final_questions": 2, **kw})


def test_test_data_that_is_the_training_file_is_refused(tmp_path: Path) -> None:
    cfg = gsm8k_config(tmp_path, problems("train", 20))
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "train.jsonl")
    for same in (cfg.data, str(tmp_path / "sub" / ".." / "train.jsonl"), str(tmp_path / "link.jsonl")):
        msg = one_line_error(load_tasks, replace(cfg, test_data=same))
        assert f"--test-data {same} is the --data file itself" in msg


def test_test_questions_also_in_training_are_refused(tmp_path: Path) -> None:
    train = problems("train", 20)
    shared = [train[3], (train[5][0].replace(" ", "  ") + " ", train[5][1]), train[11]]  # white space aside, the same
    cfg = gsm8k_config(tmp_path, train, problems("test", 5) + shared)
    msg = one_line_error(load_tasks, cfg)
    assert f"--test-data {cfg.test_data} holds 3 questions that are also in --data {cfg.data}" in msg
    cfg = gsm8k_config(tmp_path, train, problems("test", 5) + shared[:1])
    assert "holds 1 question that is also in" in one_line_error(load_tasks, cfg)
    cfg = gsm8k_config(tmp_path, train, problems("test", 5))
    assert len(load_tasks(cfg)["test"]) == 5


@pytest.mark.parametrize("test_file", [False, True])
def test_repeated_training_questions_land_in_one_part(tmp_path: Path, test_file: bool) -> None:
    """A question the training file repeats is kept once, so no copy of it is held out while another trains."""
    rows = problems("train", 10) * 3
    cfg = gsm8k_config(tmp_path, rows, problems("test", 3) if test_file else None, eval_questions=3,
                       final_questions=3)
    tasks = load_tasks(cfg)
    parts = ("demos", "rl", "valid") if test_file else ("demos", "rl", "valid", "test")
    questions = [t["question"] for part in parts for t in tasks[part]]
    assert sorted(questions) == sorted(q for q, _ in problems("train", 10))  # each once, in one part


@pytest.mark.parametrize("algo", ["airl", "outcome"])
def test_n_demos_that_leaves_no_rl_prompt_is_refused(tmp_path: Path, algo: str) -> None:
    """12 problems, 4 held out: 8 to train on. RL prompts are never demonstrations, so --n-demos 8 leaves none."""
    cfg = gsm8k_config(tmp_path, problems("train", 12), algo=algo, prompts_per_iter=1, disc_batch=1)
    for n_demos in (8, 50):
        tasks = load_tasks(replace(cfg, n_demos=n_demos))
        assert tasks["rl"] == []  # never the demonstrations instead
        msg = one_line_error(check_sizes, replace(cfg, n_demos=n_demos), tasks)
        assert f"{cfg.data}: --n-demos {n_demos} takes all 8 training problems" in msg and "lower --n-demos" in msg
    tasks = load_tasks(replace(cfg, n_demos=7))
    check_sizes(replace(cfg, n_demos=7), tasks)
    assert len(tasks["rl"]) == 1 and tasks["rl"][0] not in tasks["demos"]


def test_n_demos_beyond_the_training_problems_takes_them_all_and_says_so(tmp_path: Path, capsys) -> None:
    cfg = gsm8k_config(tmp_path, problems("train", 12), disc_batch=1)
    for algo in ("sft", "reward"):
        tasks = load_tasks(replace(cfg, n_demos=9))
        check_sizes(replace(cfg, algo=algo, n_demos=9), tasks)
        assert len(tasks["demos"]) == 8
        assert "note: --n-demos 9, but" in capsys.readouterr().err
        check_sizes(replace(cfg, algo=algo, n_demos=8), load_tasks(replace(cfg, n_demos=8)))  # all 8: no note
        assert capsys.readouterr().err == ""
    check_sizes(replace(cfg, algo="pretrain", n_demos=400), load_tasks(replace(cfg, n_demos=400)))  # reads none

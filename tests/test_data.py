"""Tests for minirl.data and minirl.world: answers, GSM8K loading, the synthetic world, perturbations (M3)."""

from __future__ import annotations

import json
import operator
import os
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from minirl.config import UserError
from minirl.data import (
    DataError,
    extract_answer,
    format_prompt,
    is_correct,
    load_gsm8k,
    read_jsonl_tasks,
    strip_calculator,
    synthetic_tasks,
)
from minirl.perturb import PERTURBATIONS, perturb
from minirl.world import MISCONCEPTIONS, make_world

# the project's offline copy of GSM8K (a folder with test.jsonl), named by an environment variable
GSM8K_TEST = Path(os.environ.get("MINIRL_GSM8K_DIR", "/nonexistent")).expanduser() / "test.jsonl"

# ---------------------------------------------------------------- extract_answer / is_correct


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("so the total is 1000+234.\n#### 1,234", 1234.0),  # thousands separator dropped
        ("#### $5.", 5.0),  # dollar sign and sentence period dropped
        ("#### -3", -3.0),
        ("#### 2.5", 2.5),
        ("Ben has 3 books and 4 pens, 7 things", 7.0),  # no ####: the last number in the text
        ("a 12 b\n#### ", None),  # nothing after ####: unreadable, never the last number elsewhere in the text
        ("no number here at all", None),
        ("", None),
    ],
)
def test_extract_answer_cases(text: str, want: float | None) -> None:
    assert extract_answer(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # normal answers
        ("#### 72", 72.0),
        ("#### 1,234", 1234.0),
        ("#### 12,345,678", 12345678.0),
        ("#### -5", -5.0),
        ("#### $18.", 18.0),
        ("#### 3.5", 3.5),
        ("#### 18 books.", 18.0),  # unit words after the number
        ("The answer is 42", 42.0),  # no ####: the last number in the text
        ("She paid $1,000.", 1000.0),
        ("####\n72", 72.0),  # the first non-empty line after the marker
        ("#### .5", 0.5),  # its true value, never 5
        ("#### \u22125", -5.0),  # the Unicode minus sign
        ("x is \u22123", -3.0),
        # odd model output: unreadable (None), never a misreading
        ("#### 7,2", None),  # not thousands in groups of three: not 72, not 7
        ("#### 1234,567", None),
        ("#### 1/2", None),
        ("#### 1e3", None),
        ("#### 1 000", None),
        ("#### 10-3", None),
        ("#### 3.5.6", None),
        ("#### 5 apples and 3 pears", None),  # more than one number
        ("#### about 5", None),  # words before the number
        ("the sum is 12\n####", None),  # an empty #### never falls back to an earlier number
        ("the sum is 12\n#### \n\n", None),
        ("#### 12\nwait\n#### ?", None),  # the LAST marker decides
        ("Ben has 3 books, then 7,2", None),  # without ####: digits after the last number, so not 3, 2 or 72
        ("so it is 1/2", None),
        ("about 1 000", None),
    ],
)
def test_extract_answer_is_strict(text: str, want: float | None) -> None:
    assert extract_answer(text) == want


@pytest.mark.parametrize("reply", ["#### 7,2", "#### 72,5", "#### 7 2", "#### 720/10", "#### 72e0", "####", "#### 1 72",
                                   "7,2"])
def test_odd_replies_are_never_correct(reply: str) -> None:
    assert not is_correct(reply, "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72")


def test_an_unreadable_gold_is_never_matched() -> None:
    assert not is_correct("#### 12", "a 12 b\n####")
    assert not is_correct("no number", "no number")  # None == None is not a right answer


def test_all_gsm8k_gold_answers_read_to_their_value() -> None:
    folder = os.environ.get("MINIRL_GSM8K_DIR")
    if not folder:
        pytest.skip("set MINIRL_GSM8K_DIR to a folder with GSM8K's train.jsonl and test.jsonl")
    n = 0
    for name in ("train.jsonl", "test.jsonl"):
        path = Path(folder) / name
        for line in path.read_text(encoding="utf-8").splitlines():
            answer = json.loads(line)["answer"]
            want = float(answer.split("####")[1].strip().replace(",", ""))
            assert extract_answer(answer) == want, answer
            n += 1
        assert len(load_gsm8k(str(path))) > 0  # no row is refused
    assert n == 8792


def test_extract_answer_uses_the_last_hash_marker() -> None:
    assert extract_answer("#### 3\nwait, redo it\n#### 8") == 8.0


def test_extract_answer_takes_the_number_right_after_the_marker() -> None:
    # the docstring: "The number after the last `####`": for '#### 18 ...' that is 18
    assert extract_answer("Ben has 6*3 = <<6*3=18>>18 books.\n#### 18 books.\nBen has 3") == 18.0


def test_is_correct_compares_numbers() -> None:
    gold = "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert is_correct("#### 72.0", gold)  # 72.0 == 72
    assert is_correct("so she sold 72 clips", gold)  # no marker: last number
    assert not is_correct("#### 72.01", gold)  # 0.01 off: more than the 1e-6 tolerance
    assert not is_correct("#### 71", gold)
    assert not is_correct("I don't know", gold)  # no number -> never correct
    assert not is_correct("#### 72", "no gold number")


# ---------------------------------------------------------------- GSM8K loading


def test_load_gsm8k_offline_test_file() -> None:
    if not GSM8K_TEST.is_file():
        pytest.skip("MINIRL_GSM8K_DIR (a folder with GSM8K's test.jsonl) unset or absent")
    rows = load_gsm8k(str(GSM8K_TEST))
    assert len(rows) == 1319
    assert all(set(r) == {"question", "answer"} for r in rows)
    assert all(isinstance(r["question"], str) and isinstance(r["answer"], str) for r in rows)
    assert all("####" in r["answer"] for r in rows)
    assert all(extract_answer(r["answer"]) is not None for r in rows)
    # the first test problem (Janet's ducks): 16 - 3 - 4 = 9 eggs at $2 -> 18
    assert extract_answer(rows[0]["answer"]) == 18.0


def _data_error(path: Path) -> str:
    with pytest.raises(DataError) as err:
        read_jsonl_tasks(path)
    msg = str(err.value)
    assert "\n" not in msg, "a DataError is printed as one line"
    return msg


def test_missing_file(tmp_path: Path) -> None:
    msg = _data_error(tmp_path / "nope.jsonl")
    assert "no such file" in msg
    with pytest.raises(DataError, match="no such file"):  # the same through load_gsm8k (.jsonl suffix)
        load_gsm8k(str(tmp_path / "nope.jsonl"))


def test_load_gsm8k_rejects_an_unknown_source_without_the_hub() -> None:
    with pytest.raises(DataError, match="no such file") as err:
        load_gsm8k("validation")  # neither a file nor 'train'/'test'
    assert "\n" not in str(err.value)


def test_bad_json_line_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{not json}\n', encoding="utf-8")
    msg = _data_error(path)
    assert ":2:" in msg and "not valid JSON" in msg


def test_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "field.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "q2"}\n', encoding="utf-8")
    msg = _data_error(path)
    assert ":3:" in msg and "answer" in msg  # the blank line 2 is skipped but still counted


def test_non_string_field(tmp_path: Path) -> None:
    path = tmp_path / "num.jsonl"
    path.write_text('{"question": "q", "answer": 5}\n', encoding="utf-8")
    assert ":1:" in _data_error(path)


def test_gold_without_a_final_number_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": "no number"}\n',
                    encoding="utf-8")
    msg = _data_error(path)
    assert str(path) in msg and ":2:" in msg and "final number" in msg
    path.write_text('{"question": "q", "answer": "it is 7\\n####"}\n', encoding="utf-8")  # an empty marker
    assert ":1:" in _data_error(path)
    with pytest.raises(DataError, match="final number"):  # the same through load_gsm8k
        load_gsm8k(str(path))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"question": "caf\u00e9", "answer": "#### 1"}\n'.encode("latin-1"))
    msg = _data_error(path)
    assert str(path) in msg and "UTF-8" in msg


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    assert "no tasks" in _data_error(path)


def test_good_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"question": "q1", "answer": "#### 1", "extra": 3}\n{"question": "q2", "answer": "#### 2"}\n',
                    encoding="utf-8")
    assert load_gsm8k(str(path)) == [{"question": "q1", "answer": "#### 1"}, {"question": "q2", "answer": "#### 2"}]


def test_strip_calculator_keeps_the_solution_readable() -> None:
    text = "She sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"
    assert strip_calculator(text) == "She sold 48/2 = 24 clips.\nIn all 48+24 = 72.\n#### 72"
    assert strip_calculator("no annotation\n#### 3") == "no annotation\n#### 3"


def test_gsm8k_runs_strip_annotations_unless_asked(tmp_path: Path) -> None:
    from minirl.config import TrainConfig
    from minirl.data import load_tasks

    path = tmp_path / "g.jsonl"
    path.write_text("".join(f'{{"question": "q{i}", "answer": "2*{i} = <<2*{i}={2 * i}>>{2 * i}\\n#### {2 * i}"}}\n'
                            for i in range(6)), encoding="utf-8")
    stripped = load_tasks(TrainConfig(data=str(path), n_demos=2, final_questions=2, eval_questions=1))
    assert all("<<" not in t["answer"] for part in ("demos", "rl", "test", "valid") for t in stripped[part])
    assert len(stripped["test"]) == 2 and is_correct(stripped["test"][0]["answer"], stripped["test"][0]["answer"])
    kept = load_tasks(TrainConfig(data=str(path), n_demos=2, final_questions=2, eval_questions=1,
                                  calculator_annotations=True))
    assert all("<<" in t["answer"] for t in kept["demos"] + kept["test"] + kept["valid"])


@pytest.mark.parametrize("test_file", [False, True])
def test_gsm8k_validation_problems_are_apart_from_every_other_part(tmp_path: Path, test_file: bool) -> None:
    """The best checkpoint is chosen on "valid": never a test problem, a demonstration or an RL prompt, with or
    without --test-data; the demonstrations are the same problems whatever the number of validation problems."""
    from minirl.config import TrainConfig
    from minirl.data import load_tasks

    def write(name: str, n: int) -> str:
        path = tmp_path / name
        path.write_text("".join(f'{{"question": "{name} {i}", "answer": "{i}\\n#### {i}"}}\n' for i in range(n)))
        return str(path)

    cfg = TrainConfig(data=write("train", 30), test_data=write("test", 8) if test_file else "", n_demos=6,
                      final_questions=8, eval_questions=5)
    tasks = load_tasks(cfg)
    questions = {part: {t["question"] for t in tasks[part]} for part in ("demos", "rl", "test", "valid")}
    assert len(tasks["valid"]) == 5 and len(tasks["test"]) == 8
    assert len(tasks["rl"]) == 30 - 6 - 5 - (0 if test_file else 8)
    for part in ("demos", "rl", "test"):
        assert not questions["valid"] & questions[part], part
    assert tasks["demos"] == load_tasks(replace(cfg, eval_questions=2))["demos"]
    with pytest.raises(DataError, match=r"30 problems, and 30 of them are held out for evaluation \(--eval-questions"):
        load_tasks(replace(cfg, eval_questions=30 if test_file else 22))


# ---------------------------------------------------------------- the synthetic world

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# "<visible a><op><visible b> = <<a op b=c>>shown"
STEP_RE = re.compile(r"(-?\d+)([-+*/])(\d+) = <<(-?\d+)([-+*/])(\d+)=(-?\d+)>>(-?\d+)")


def _apply(a: int, op: str, b: int) -> int:
    if op == "/":
        assert a % b == 0, f"inexact division {a}/{b}"
        return a // b
    return OPS[op](a, b)


def check_solution(text: str) -> list[int]:
    """Every step line is `... a op b = <<a op b=c>>c ...` with c right; `#### n` is the last result."""
    *lines, last = text.split("\n")
    assert lines, text
    results = []
    for line in lines:
        found = STEP_RE.findall(line)
        assert len(found) == 1, line
        va, vop, vb, a, op, b, c, shown = found[0]
        assert (va, vop, vb) == (a, op, b), f"visible expression differs from the annotation: {line}"
        assert _apply(int(a), op, int(b)) == int(c), line
        assert shown == c, line
        results.append(int(c))
    m = re.fullmatch(r"#### (-?\d+)", last)
    assert m is not None, last
    assert int(m.group(1)) == results[-1]
    return results


@pytest.fixture(scope="module")
def world():
    return make_world(0, n_demos=150, n_corpus=300, n_test=100)


def test_world_is_deterministic_in_its_seed(world) -> None:
    again = make_world(0, n_demos=150, n_corpus=300, n_test=100)
    assert [p.question for p in again.demos] == [p.question for p in world.demos]
    assert [p.solution() for p in again.test] == [p.solution() for p in world.test]
    assert [s for _, s in again.corpus] == [s for _, s in world.corpus]
    other = make_world(1, n_demos=150, n_corpus=300, n_test=100)
    assert [p.question for p in other.demos] != [p.question for p in world.demos]
    assert {p.question for p in other.test} != {p.question for p in world.test}


def test_world_parts_are_disjoint() -> None:
    # big enough that repeats would be certain without the dedup (a price_change problem has ~3k wordings)
    w = make_world(0, n_demos=300, n_corpus=2000, n_test=300)
    demos = {p.question for p in w.demos}
    corpus = {p.question for p, _ in w.corpus}
    test = {p.question for p in w.test}
    valid = {p.question for p in w.valid}
    assert (len(demos), len(corpus), len(test), len(valid)) == (300, 2000, 300, 100)  # no duplicates in a part either
    assert not demos & corpus and not demos & test and not corpus & test
    assert not valid & (demos | corpus | test)


def test_world_validation_problems_are_drawn_last() -> None:
    """The number of validation problems changes no other part of the world (its runs stay comparable)."""
    few, many = (make_world(0, n_demos=50, n_corpus=300, n_test=50, n_valid=n) for n in (0, 30))
    assert len(few.valid) == 0 and len(many.valid) == 30
    assert [p.question for p in few.test] == [p.question for p in many.test]
    assert [p.question for p in few.demos] == [p.question for p in many.demos]
    assert [s for _, s in few.corpus] == [s for _, s in many.corpus]


def test_world_solutions_are_arithmetically_right(world) -> None:
    for p in world.demos + world.test:
        results = check_solution(p.solution())
        assert results[-1] == p.answer
    for _, sol in world.corpus:  # misconceived solutions compute the wrong operation, but compute it right
        check_solution(sol)


def test_world_kinds_and_step_counts(world) -> None:
    assert len({p.kind for p in world.demos}) >= 5
    for p in world.demos + world.test + [p for p, _ in world.corpus]:
        assert 2 <= len(p.steps) <= 4
        assert len(p.solution().split("\n")) == len(p.steps) + 1
        assert set(p.cues) <= set(MISCONCEPTIONS)


def test_world_counts_are_never_negative() -> None:
    # item counts and prices: no template may produce a negative intermediate or final result
    w = make_world(0, n_demos=10, n_corpus=3000, n_test=10)
    problems = w.demos + w.test + [p for p, _ in w.corpus]
    assert [p.question for p in problems if any(s.result < 0 for s in p.steps)] == []


def test_leave_out_keeps_the_cue_out_of_the_demos() -> None:
    w = make_world(0, n_demos=150, n_corpus=300, n_test=100, leave_out="half_as_many")
    assert all("half_as_many" not in p.cues for p in w.demos)
    assert all("half as many" not in p.question for p in w.demos)
    # ... but it stays in the corpus and the test set
    assert any("half_as_many" in p.cues for p in w.test)
    assert any("half_as_many" in p.cues for p, _ in w.corpus)
    tasks = synthetic_tasks(0, n_demos=50, n_corpus=10, n_test=10, leave_out="half_as_many")
    assert all("half_as_many" not in t["cues"] for t in tasks["demos"])


def test_unknown_leave_out_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown misconception"):
        make_world(0, n_demos=5, n_corpus=5, n_test=5, leave_out="half as many")


def test_misconception_rate_zero_and_one() -> None:
    clean = make_world(3, n_demos=5, n_corpus=200, n_test=5, misconception_rate=0.0)
    assert all(sol == p.solution() for p, sol in clean.corpus)
    wrong = make_world(3, n_demos=5, n_corpus=200, n_test=5, misconception_rate=1.0)
    for p, sol in wrong.corpus:  # every cue is held: a cued problem always differs, an uncued one never
        assert (sol != p.solution()) == bool(p.cues), p.question


def test_half_as_many_is_solved_by_doubling() -> None:
    w = make_world(3, n_demos=5, n_corpus=200, n_test=5, misconception_rate=1.0)
    p, sol = next((p, s) for p, s in w.corpus if p.kind == "half_total")
    m = re.match(r"(\w+) has (\d+) (\w+)\. (\w+) has half as many", p.question)
    assert m is not None
    n, item, q = int(m.group(2)), m.group(3), m.group(4)
    # cues of half_total: half_as_many (n/2 -> n*2) and forgot_last_step (stop after step 1), both held
    assert sol == f"{q} has {n}*2 = <<{n}*2={2 * n}>>{2 * n} {item}.\n#### {2 * n}"
    # the clean solution: q has n/2, together n + n/2 = 3n/2
    assert p.solution() == (f"{q} has {n}/2 = <<{n}/2={n // 2}>>{n // 2} {item}.\n"
                            f"Together they have {n}+{n // 2} = <<{n}+{n // 2}={n + n // 2}>>{n + n // 2} {item}.\n"
                            f"#### {n + n // 2}")
    # only half_as_many held: doubling flows into the second step, n + 2n = 3n
    assert p.solution({"half_as_many"}).endswith(f"<<{n}+{2 * n}={3 * n}>>{3 * n} {item}.\n#### {3 * n}")


def test_forgot_last_step_needs_its_cue() -> None:
    w = make_world(0, n_demos=40, n_corpus=5, n_test=5)
    p = next(p for p in w.demos if p.kind == "buy_then_lose")  # cues: gives_away only
    assert p.solution({"forgot_last_step"}) == p.solution()
    q = next(p for p in w.demos if p.kind == "half_total")  # cued: the last step is dropped
    assert len(q.solution({"forgot_last_step"}).split("\n")) == len(q.solution().split("\n")) - 1


def test_synthetic_tasks_layout() -> None:
    tasks = synthetic_tasks(0, n_demos=7, n_corpus=11, n_test=5, n_valid=3, misconception_rate=1.0)
    assert {k: len(v) for k, v in tasks.items()} == {"demos": 7, "corpus": 11, "rl": 11, "test": 5, "valid": 3}
    # "rl" holds the corpus problems with their correct solutions
    for c, r in zip(tasks["corpus"], tasks["rl"], strict=True):
        assert c["question"] == r["question"]
        assert (c["answer"] != r["answer"]) == bool(c["cues"])
        check_solution(r["answer"])


def test_format_prompt_plain_for_tiny_tokenizers() -> None:
    assert format_prompt("How many?", None) == "Question: How many?\nAnswer: "


# ---------------------------------------------------------------- perturbations (M3)

SOL = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
       "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
       "#### 72")


@pytest.mark.parametrize("kind", list(PERTURBATIONS))
def test_perturbation_keeps_the_text_before_its_span(kind: str) -> None:
    for seed in range(20):
        got = perturb(SOL, random.Random(seed), kind)
        assert got is not None
        text, (start, end), k = got
        assert k == kind
        assert text != SOL
        assert 0 <= start < end <= len(text)  # non-empty span inside the new text
        assert text[:start] == SOL[:start]  # nothing before the span moved
        first_diff = next(i for i, (a, b) in enumerate(zip(text, SOL + "\0", strict=False)) if a != b)
        assert start <= first_diff < end  # the span holds the first change


def test_perturb_final_nudges_only_the_answer() -> None:
    seen = set()
    for seed in range(20):
        text, (start, end), _ = perturb(SOL, random.Random(seed), "final")
        head, tail = text.rsplit("#### ", 1)
        assert head == SOL.rsplit("#### ", 1)[0]
        assert int(tail) - 72 in (-1, 1)
        assert (start, end) == (len(head) + 5, len(text))  # the span is exactly the new number
        seen.add(int(tail))
    assert seen == {71, 73}


def test_perturb_operator_flips_one_operator() -> None:
    for seed in range(20):
        text, (start, end), _ = perturb(SOL, random.Random(seed), "operator")
        assert len(text) == len(SOL)
        diff = [i for i, (a, b) in enumerate(zip(SOL, text, strict=True)) if a != b]
        assert diff == [start] and end == start + 1
        assert SOL[start] in "+-*/" and text[start] in "+-*/"


def test_perturb_result_rewrites_annotation_and_shown_value() -> None:
    calc = re.compile(r"<<([^=<>]+)=(-?\d+)>>(-?\d+)")
    for seed in range(20):
        text, (start, end), _ = perturb(SOL, random.Random(seed), "result")
        old, new = calc.findall(SOL), calc.findall(text)
        changed = [(o, n) for o, n in zip(old, new, strict=True) if o != n]
        assert len(changed) == 1
        (expr, r_old, _), (expr_new, r_new, shown) = changed[0]
        assert expr == expr_new and r_new == shown  # the annotation and the visible value agree
        assert 1 <= abs(int(r_new) - int(r_old)) <= 2
        assert text[start:end] == f"{r_new}>>{shown}"  # the span: new annotation result .. shown value
        assert text.endswith("#### 72")  # the final answer is kept


def test_perturb_result_changes_only_digits() -> None:
    text = "The pens cost $5*3 = <<5*3=15>>15.\nAva gets $20-15 = <<20-15=5>>5 back.\n#### 5"
    for seed in range(10):
        new, _, _ = perturb(text, random.Random(seed), "result")
        # results stay >= 3 after a shift of at most 2: no minus sign appears, so only digits may change
        assert re.sub(r"\d", "", new) == re.sub(r"\d", "", text)


def test_perturb_numbers_shifts_a_quarter_of_them() -> None:
    number = re.compile(r"(?<![\d.])\d+(?![\d.])")
    old = [int(x) for x in number.findall(SOL)]
    assert len(old) == 13  # 48 2 48 2 24 24 / 48 24 48 24 72 72 / 72
    for seed in range(20):
        text, (start, end), _ = perturb(SOL, random.Random(seed), "numbers")
        assert re.split(r"\d+", text) == re.split(r"\d+", SOL)  # only numbers changed
        new = [int(x) for x in number.findall(text)]
        changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
        assert len(changed) == 13 // 4  # max(1, 13 // 4) = 3
        assert all(1 <= abs(a - b) <= 2 for a, b in changed)
        assert text[start:end] == str(changed[0][1])  # the span is the first changed number


def test_perturb_never_returns_the_original() -> None:
    kinds = set()
    for seed in range(50):
        got = perturb(SOL, random.Random(seed))
        assert got is not None and got[0] != SOL
        kinds.add(got[2])
    assert kinds == set(PERTURBATIONS)


def test_perturb_edge_cases() -> None:
    with pytest.raises(DataError, match="unknown perturbation"):
        perturb(SOL, random.Random(0), "swap")
    assert perturb("no digits at all", random.Random(0)) is None
    assert perturb("Ben has 6 books.", random.Random(0), "final") is None  # no '####'
    assert perturb("Ben has 6 books.", random.Random(0), "operator") is None  # no operator between digits

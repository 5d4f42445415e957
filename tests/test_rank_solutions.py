"""benchmarks/rank_solutions.py: labelled solutions scored by a run's reward and log-prob, and the policy's own."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minirl.rerank import load_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("rank_solutions", ROOT / "benchmarks" / "rank_solutions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_score_ranks_each_questions_responses_and_saves_rerank_records(bench, run_dir, tmp_path):
    rows = [{"question": "Ann has 3 apples and buys 2. How many?", "response": f"3+2 = {a}\n#### {a}",
             "correct": a == 5} for a in (5, 6, 7)]
    rows += [{"question": "Bob has 4 pens. He loses 1. How many?", "response": "4-1 = 3\n#### 3", "correct": True}]
    solutions = write_lines(tmp_path / "s.jsonl", rows)
    result = CliRunner().invoke(bench.app, ["score", str(run_dir), str(solutions), "--samples",
                                            str(tmp_path / "rec.jsonl")])
    assert result.exit_code == 0, result.output
    assert "2 questions, 1 with a right and a wrong response" in result.output
    for method in bench.INTERVALS:
        assert f"{method}: AUROC within question" in result.output
    records = load_records(tmp_path / "rec.jsonl")  # what `minirl rerank --from-samples` reads
    assert [[s["correct"] for s in r["samples"]] for r in records] == [[True, False, False], [True]]
    assert [s["answer"] for s in records[0]["samples"]] == [5, 6, 7]
    assert all(len(s["tokens"]) == len(s["rewards"]) and s["logprob"] < 0 for r in records for s in r["samples"])


@pytest.mark.parametrize("content, message", [
    (None, "s.jsonl: no such file"),
    ([{"question": "q", "response": "r"}], "s.jsonl:1: not a labelled solution"),
    ([{"question": "q", "response": "r", "correct": "yes"}], "s.jsonl:1: not a labelled solution"),
    (["", "   "], "s.jsonl: no solutions in file"),
])
def test_score_refuses_bad_solution_files_in_one_line(bench, run_dir, tmp_path, content, message):
    path = tmp_path / "s.jsonl"
    if content is not None:
        write_lines(path, content)
    result = CliRunner().invoke(bench.app, ["score", str(run_dir), str(path)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sample_answers_easy_problems_after_the_skipped_ones_and_continues(bench, run_dir, tmp_path):
    def problem(i: int, steps: int) -> dict:
        working = "\n".join(f"{i}+{k} = <<{i}+{k}={i + k}>>{i + k}" for k in range(steps))
        return {"question": f"problem {i}", "answer": f"{working}\n#### {i}"}

    data = write_lines(tmp_path / "gsm.jsonl", [problem(0, 1), problem(1, 1), problem(2, 3), problem(3, 2),
                                                problem(4, 1)])
    out = tmp_path / "own.jsonl"
    args = ["sample", str(run_dir), str(out), "--data", str(data), "--skip", "1", "--questions", "2", "--n", "3",
            "--max-steps", "2", "--max-new-tokens", "6"]
    result = CliRunner().invoke(bench.app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == ["problem 1"] * 3 + ["problem 3"] * 3  # 0 skipped, 2 has 3 steps
    assert all(isinstance(r["correct"], bool) and isinstance(r["response"], str) for r in rows)
    again = CliRunner().invoke(bench.app, args)
    assert again.exit_code == 0 and "2 problems were there, 0 sampled now" in again.output
    assert len(out.read_text().splitlines()) == 6
    none = CliRunner().invoke(bench.app, [*args[:-2], "--max-new-tokens", "6", "--skip", "5"])
    assert none.exit_code == 1 and "gsm.jsonl: no problem after the first 5 has at most 2" in none.output


@pytest.mark.parametrize("existing", [{"a": 1}, [1, 2], {"question": "problem 0", "answer": "1+1 = 2\n#### 2"}])
def test_sample_refuses_to_append_to_a_file_of_other_rows(bench, run_dir, tmp_path, existing):
    data = write_lines(tmp_path / "gsm.jsonl", [{"question": "problem 0", "answer": "1+1 = <<1+1=2>>2\n#### 2"}])
    out = write_lines(tmp_path / "out.jsonl", [{"question": "q", "response": "r", "correct": True}, existing])
    before = out.read_text()
    result = CliRunner().invoke(bench.app, ["sample", str(run_dir), str(out), "--data", str(data), "--skip", "0",
                                            "--questions", "1", "--n", "2", "--max-new-tokens", "4"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.output.strip().startswith(f"error: {out}:2: not a labelled solution")
    assert len(result.output.strip().splitlines()) == 1 and out.read_text() == before


def test_sample_refuses_an_output_it_cannot_write_before_any_work(bench, run_dir, tmp_path):
    data = write_lines(tmp_path / "gsm.jsonl", [{"question": "problem 0", "answer": "1+1 = <<1+1=2>>2\n#### 2"}])
    for out, says in ((tmp_path, "is a folder, not a file"), (tmp_path / "no" / "o.jsonl", "no such folder")):
        result = CliRunner().invoke(bench.app, ["sample", str(run_dir), str(out), "--data", str(data), "--skip", "0",
                                                "--questions", "1", "--n", "2", "--max-new-tokens", "4"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.strip().startswith(f"error: OUT {out}: {says}"), result.output

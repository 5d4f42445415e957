"""Does a trained reward rank right solutions above wrong ones of the same question better than the log-prob?

    python benchmarks/rank_solutions.py score runs/smollm2-reward solutions.jsonl
    python benchmarks/rank_solutions.py sample runs/smollm2-reward solutions.jsonl --data gsm8k/test.jsonl

`score` reads labelled solutions, one JSON object per line: {"question": str, "response": str, "correct": bool}, with
several responses per question (any model's: yours, or the policy's from `sample`). It scores every response with
the run's reward model and its policy's log-prob (teacher-forced, as `minirl.reward.score` does) and prints
`minirl rerank`'s table for them: best-of-N success and the within-question AUROC of right above wrong (M5, M7),
with 95 % bootstrap intervals over questions for the reward (`f-logpi`, the D logit, and `mean`, f alone) and the
log-prob. Only questions with both a right and a wrong response count toward the within-question AUROC.

`sample` writes such a file from the run's own policy: `--n` answers (T 0.7, top-p 0.95) to each of `--questions`
GSM8K problems of `--data` after the first `--skip` (a `--algo reward` run holds out the first 100 test problems),
keeping problems whose expert solution has at most `--max-steps` calculations: a small model is right often enough
only on the easiest. The file grows a question at a time; run it again to continue. ~45 s a question for SmolLM2
(16 answers) on 2 cores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import typer
from rich.console import Console

from minirl import folders, runs
from minirl.cli import user_errors
from minirl.data import DataError, extract_answer, is_correct, load_gsm8k, read_jsonl
from minirl.rerank import rerank_table, save_records, score_texts
from minirl.rollout import sample_answers
from minirl.tables import auroc_interval_lines, rerank_table_view

app = typer.Typer(add_completion=False)
INTERVALS = ("f-logpi", "mean", "logprob")


@app.command()
def score(run: Path = typer.Argument(..., help="a run folder with a reward model"),
          solutions: Path = typer.Argument(..., help="labelled solutions (JSON lines: question, response, correct)"),
          samples: Path = typer.Option(None, help="also save the scored records here (`minirl rerank --from-samples`)")
          ) -> None:
    with user_errors():
        if samples:  # before minutes of scoring; never over what is read
            folders.check_output(samples, "--samples", inputs={"SOLUTIONS": str(solutions), "RUN": str(run)})
        by_question = read_solutions(solutions)
        policy, tokenizer, reward_model, _ = runs.load_run(run)
        if reward_model is None:
            raise DataError(f"{run}: no reward model in this run (no reward/ inside)")
        records = [score_question(policy, tokenizer, reward_model, q, rows) for q, rows in by_question.items()]
        both = sum(0 < sum(s["correct"] for s in r["samples"]) < len(r["samples"]) for r in records)
        n_min = min(len(r["samples"]) for r in records)
        ks = tuple(k for k in (1, 4, 8, 16) if k <= n_min)
        figures = rerank_table(records, ks, auroc_intervals=INTERVALS)
        title = f"{solutions}: {len(records)} questions, {both} with a right and a wrong response"
        console = Console() if sys.stdout.isatty() else Console(width=160)  # a log file: no wrapping at 80 columns
        console.print(title, markup=False)
        console.print(rerank_table_view(figures, ks, "success@k: a right one among the top k of a question's "
                                                      "responses; AUROC of each score"))
        for line in auroc_interval_lines(figures, INTERVALS):
            console.print(line, markup=False)
        if samples:
            save_records(records, samples)


def read_solutions(path: Path) -> dict[str, list[dict]]:
    """question -> its labelled responses, in file order; a line without the three keys is one DataError."""
    by_question: dict[str, list[dict]] = {}
    for i, row in read_jsonl(path):
        if not is_solution(row):
            raise DataError(f"{path}:{i}: not a labelled solution (question: str, response: str, correct: bool)")
        by_question.setdefault(row["question"], []).append(row)
    if not by_question:
        raise DataError(f"{path}: no solutions in file")
    return by_question


def is_solution(row: object) -> bool:
    """A labelled solution: {"question": str, "response": str, "correct": bool}."""
    return (isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(row.get("response"), str)
            and isinstance(row.get("correct"), bool))


def answered(out: Path) -> set[str]:
    """The questions that `sample`'s output already holds (none before it exists): the file is continued. Checked
    before any work: a file holding anything but labelled solutions (GSM8K problems, say) is never appended to."""
    folders.check_output(out, "OUT")
    if not out.exists():
        return set()
    rows = read_jsonl(out)
    wrong = next((i for i, row in rows if not is_solution(row)), None)
    if wrong is not None:
        raise DataError(f"{out}:{wrong}: not a labelled solution (question: str, response: str, correct: bool); "
                        "`sample` continues an existing file of its own solutions only: name a new file")
    return {row["question"] for _, row in rows}


@torch.no_grad()
def score_question(policy, tokenizer, reward_model, question: str, rows: list[dict], batch: int = 8) -> dict:
    """One `rerank` record: each response with its label, its mean log-prob and its per-token reward f_t."""
    samples = []
    for start in range(0, len(rows), batch):
        chunk = rows[start: start + batch]
        for row, out in zip(chunk, score_texts(policy, tokenizer, [question] * len(chunk),
                                               [r["response"] for r in chunk], reward_model)):
            samples.append({"text": row["response"], "answer": extract_answer(row["response"]),
                            "correct": row["correct"], "logprob": sum(out["logprobs"]) / len(out["logprobs"]),
                            "tokens": out["tokens"], "rewards": out["rewards"]})
    return {"question": question, "gold": None, "samples": samples}


@app.command()
def sample(run: Path = typer.Argument(..., help="a run folder: its policy answers"),
           out: Path = typer.Argument(..., help="labelled solutions are appended here"),
           data: Path = typer.Option(..., help="GSM8K problems (.jsonl)"),
           skip: int = typer.Option(100, min=0, help="problems at the head of --data left alone"),
           questions: int = typer.Option(60, min=1, help="problems to answer"),
           n: int = typer.Option(16, min=2, help="answers per problem"),
           max_steps: int = typer.Option(2, min=1, help="keep problems whose solution has at most this many steps"),
           temperature: float = typer.Option(0.7, min=0.01), max_new_tokens: int = typer.Option(256, min=1)) -> None:
    with user_errors():
        tasks = [t for t in load_gsm8k(str(data))[skip:] if t["answer"].count("<<") <= max_steps][:questions]
        if not tasks:
            raise DataError(f"{data}: no problem after the first {skip} has at most {max_steps} calculation steps")
        done = answered(out)
        todo = [t for t in tasks if t["question"] not in done]
        policy, tokenizer, _, _ = runs.load_run(run)
        torch.manual_seed(len(done))
        with torch.no_grad(), open(out, "a") as f:
            for rows, batch in sample_answers(policy, tokenizer, [t["question"] for t in todo], n, max_new_tokens,
                                              temperature, 0.95, batch_size=2 * n, progress=True):
                for row, text in zip(rows, batch.texts(tokenizer)):
                    f.write(json.dumps({"question": todo[row]["question"], "response": text,
                                        "correct": is_correct(text, todo[row]["answer"])}) + "\n")
                f.flush()
        print(f"{out}: {len(tasks) - len(todo)} problems were there, {len(todo)} sampled now")


if __name__ == "__main__":
    app()

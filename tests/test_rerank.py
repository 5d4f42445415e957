"""`minirl rerank` end to end on a micro run (the `run_dir` fixture in conftest.py), the
trace aggregators of M5 on hand-built rewards, and saved samples of the wrong types refused in one line."""

import json

import pytest
from typer.testing import CliRunner

from minirl.cli import app
from minirl.data import DataError
from minirl.rerank import aggregate, load_records, rerank_table


def test_aggregators_by_hand():
    tokens = ["a", " b", "\n", "####", " 4", "<eos>"]
    rewards = [1.0, -2.0, 0.5, 0.0, 2.0, 1.0]
    assert aggregate(rewards, tokens, "mean") == pytest.approx(2.5 / 6)
    assert aggregate(rewards, tokens, "sum") == pytest.approx(2.5)
    assert aggregate(rewards, tokens, "min") == -2.0
    assert aggregate(rewards, tokens, "last") == 1.0
    # discounted reward-to-go (gamma 0.5) from the `####` line: G_5 = 1, G_4 = 2 + 0.5 = 2.5,
    # G_3 = 0 + 0.5 * 2.5 = 1.25; their mean = (1.25 + 2.5 + 1) / 3
    assert aggregate(rewards, tokens, "discounted", gamma=0.5) == pytest.approx(4.75 / 3)


def test_rerank_table_on_constructed_scores():
    def s(correct, logprob, reward, answer):
        return {"correct": correct, "logprob": logprob, "rewards": [reward], "tokens": ["x"], "answer": answer}

    records = [{"samples": [s(True, -2.0, 1.0, 5), s(False, -1.0, 0.0, 6), s(False, -1.5, -1.0, 6)]},
               {"samples": [s(False, -1.0, 0.5, 1), s(True, -3.0, 0.4, 2), s(True, -2.5, 0.3, 2)]}]
    table = rerank_table(records, ks=(1, 2))
    assert table["random"]["success@1"] == pytest.approx((1 / 3 + 2 / 3) / 2)  # mean sample accuracy
    assert table["mean"]["success@1"] == pytest.approx(0.5)  # right on q1, wrong on q2
    assert table["logprob"]["success@1"] == 0.0  # the confident answer is wrong on both
    assert table["majority"]["success@1"] == pytest.approx(0.5)  # 6 (wrong) on q1, 2 (right) on q2
    assert table["oracle"]["success@1"] == 1.0
    # f - log pi: q1 scores 1+2=3 (right), 0+1=1, -1+1.5=0.5; q2 1.5, 0.4+3=3.4 (right), 0.3+2.5=2.8 (right)
    assert table["f-logpi"]["success@1"] == 1.0 and table["f-logpi"]["auroc"] == 1.0
    assert table["mean"]["auroc"] == pytest.approx(0.5)  # within q: 1.0 on q1, 0.0 on q2
    lo, hi = table["mean"]["success@1_ci"]
    assert lo <= 0.5 <= hi
    assert "auroc_ci" not in table["mean"]  # intervals only when asked
    table = rerank_table(records, ks=(1,), auroc_intervals=("mean",))
    # resamples of the two questions: within-question AUROC is 1.0 (q1 only), 0.0 (q2 only) or 0.5 (both)
    assert table["mean"]["auroc_ci"] == [0.0, 1.0]
    lo, hi = table["mean"]["auroc_pooled_ci"]
    assert 0.0 <= lo <= table["mean"]["auroc_pooled"] <= hi <= 1.0 and "auroc_ci" not in table["logprob"]


def test_rerank_cli_end_to_end(run_dir, tmp_path):
    out, samples = tmp_path / "figures.json", tmp_path / "samples.jsonl"
    args = ["rerank", "--run", str(run_dir), "--n", "4", "--questions", "3", "--max-new-tokens", "20"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--samples", str(samples)])
    assert result.exit_code == 0, result.output
    assert "minirl.reward.score ranks by row: mean" in result.output  # an AIRL run's reward: mean f
    figures = json.loads(out.read_text())
    assert {"random", "majority", "logprob", "oracle", "mean", "discounted", "pass@k"} <= set(figures)
    assert set(figures["mean"]) >= {"success@1", "success@4", "auroc", "auroc_pooled"}
    records = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(records) == 3 and all(len(r["samples"]) == 4 for r in records)
    # metrics recomputed from the saved samples, without sampling again, are the same
    again = tmp_path / "again.json"
    result = CliRunner().invoke(app, ["rerank", "--run", str(run_dir), "--from-samples", str(samples),
                                      "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert json.loads(again.read_text()) == figures


def test_rerank_reward_from_another_run_and_gsm8k_file(run_dir, tmp_path):
    gsm = tmp_path / "q.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 pens and buys 4. How many?", "answer": "3+4=7\n#### 7"}) + "\n")
    result = CliRunner().invoke(app, ["rerank", "--run", str(run_dir), "--reward-from", str(run_dir), "--n", "2",
                                      "--questions", "1", "--max-new-tokens", "10", "--data", str(gsm),
                                      "--out", str(tmp_path / "f.json")])
    assert result.exit_code == 0, result.output
    assert "mean" in json.loads((tmp_path / "f.json").read_text())
    missing = CliRunner().invoke(app, ["rerank", "--run", str(run_dir), "--reward-from", str(tmp_path)])
    assert missing.exit_code == 1 and "no reward model" in missing.output


def sample(**changes) -> dict:
    """A sample as `sample_and_score` writes it, with `changes`."""
    return {"text": "2+2 = 4\n#### 4", "answer": 4.0, "correct": True, "logprob": -0.5, "tokens": ["2+2", " 4"],
            "rewards": [0.5, -1.0], **changes}


def write_records(path, *samples: dict):
    path.write_text(json.dumps({"question": "q", "samples": [sample(correct=False), *samples]}) + "\n")
    return path


@pytest.mark.parametrize("changes, problem", [
    ({"rewards": "abc"}, "'rewards' must be a list of numbers, or null without a reward model"),
    ({"rewards": ["a", "b"]}, "'rewards' must be a list of numbers, or null without a reward model"),
    ({"rewards": {"a": 1.0}}, "'rewards' must be a list of numbers, or null without a reward model"),
    ({"rewards": [1.0, None]}, "'rewards' must be a list of numbers, or null without a reward model"),
    ({"correct": "yes"}, "'correct' must be true or false"),
    ({"correct": 1}, "'correct' must be true or false"),
    ({k: None for k in ("correct", "answer", "logprob", "tokens", "rewards")}, "'correct' must be true or false"),
    ({"logprob": None}, "'logprob' must be a number"),
    ({"logprob": "x"}, "'logprob' must be a number"),
    ({"tokens": 5}, "'tokens' must be a list of strings"),
    ({"tokens": ["a", 1]}, "'tokens' must be a list of strings"),
    ({"answer": [1]}, "'answer' must be a number or null"),
    ({"answer": "4"}, "'answer' must be a number or null"),
])
def test_samples_of_the_wrong_types_are_refused_in_one_line(tmp_path, changes, problem):
    path = write_records(tmp_path / "s.jsonl", sample(**changes))
    with pytest.raises(DataError) as error:
        load_records(path)
    assert str(error.value) == f"{path}:1: not a sample record (sample 2: {problem})"
    result = CliRunner().invoke(app, ["rerank", "--run", str(tmp_path), "--from-samples", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.output.strip() == f"error: {path}:1: not a sample record (sample 2: {problem})"


def test_records_without_reward_model_or_with_nans_are_still_records(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"samples": [sample(rewards=None, answer=None), sample(rewards=None, correct=False)]})
                    + "\n")  # a run without reward model: every sample's rewards null
    table = rerank_table(load_records(path), ks=(1,))
    assert "mean" not in table and table["logprob"]["success@1"] == 0.5
    nan = float("nan")  # json writes NaN as NaN: a diverged score is still a number
    table = rerank_table(load_records(write_records(path, sample(rewards=[nan, 1.0], logprob=nan))), ks=(1,))
    assert table["mean"]["success@1"] in (0.0, 1.0)  # where a NaN sorts is arbitrary; that it loads is the point

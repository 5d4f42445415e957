"""Tests for the pictures: `minirl plot` (minirl.plot) on hand-written run files and on a micro run, its one-line
errors, the per-token view saved as HTML (viz.save_html, `minirl inspect --html`), and the model cards that
describe a run's saved models (cards.write_model_card)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minirl import plot, runs, viz
from minirl.cards import write_model_card
from minirl.cli import app
from minirl.config import from_preset

PNG = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def airl_rows(iters: int = 6, warmup: int = 3) -> list[dict]:
    """What train_rl logs: an evaluation at 0, warm-up steps, then iterations with an evaluation every 3."""
    disc = dict(disc_loss=0.69, disc_acc_expert=0.6, disc_acc_policy=0.5, disc_acc_perturbed=0.4,
                disc_logit_expert=0.1, disc_logit_policy=-0.2, disc_logit_perturbed=-0.5)
    rows = [{"eval_step": 0, "sampled_acc": 0.2, "logprob_auroc": 0.5, "reward_auroc": 0.5}]
    rows += [{"warmup_step": s, **disc} for s in range(1, warmup + 1)]
    for it in range(1, iters + 1):
        rows.append({"iter": it, **disc, "reward_per_seq": -1.0 + 0.1 * it, "approx_kl": 0.01, "clip_frac": 0.05,
                     "entropy": 1.5, "response_len": 40.0, "train_acc": 0.3, "kl_ref": None})  # null: non-finite
        if it % 3 == 0:
            rows.append({"eval_step": it, "sampled_acc": 0.2 + 0.05 * it, "logprob_auroc": 0.5, "reward_auroc": 0.7})
    return rows


def invoke(*args: str):
    return CliRunner(env={"NO_COLOR": "1"}).invoke(app, list(args))


def test_curves_of_two_runs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "airl" / "metrics.jsonl", airl_rows())
    write_jsonl(tmp_path / "sft" / "metrics.jsonl", [{"step": s, "loss": 2.0 / s} for s in range(1, 5)]
                + [{"eval_step": 4, "sampled_acc": 0.5, "logprob_auroc": 0.6}])
    runs = {"airl": airl_rows(), "sft": plot.read_metrics(tmp_path / "sft")}
    titles = [title for title, _, _ in plot.curve_panels(runs)]
    kl_ref = "KL to the start, per trace (M4)"  # only nulls logged: no panel
    assert kl_ref not in titles and len(titles) == len(plot.CURVES) - 1
    assert [t for t, _, _ in plot.curve_panels({"sft": runs["sft"]})] == [
        "validation sampled accuracy", "validation AUROC in question (M7)", "pretraining / SFT loss"]
    out = plot.plot_runs([tmp_path / "airl", tmp_path / "sft"], tmp_path / "figs" / "both.png")
    assert out == tmp_path / "figs" / "both.png" and out.read_bytes().startswith(PNG)


def test_series_puts_the_warm_up_before_the_iterations() -> None:
    rows = airl_rows(iters=2, warmup=3)
    assert plot.series(rows, "disc", "disc_acc_expert") == ([1, 2, 3, 4, 5], [0.6] * 5)
    assert plot.series(rows, "eval_step", "sampled_acc") == ([0], [0.2])
    assert plot.series(rows, "iter", "kl_ref") == ([], [])


def test_histograms_of_right_and_wrong_samples(tmp_path: Path) -> None:
    sample = lambda correct, rewards, logprob: {"text": "x", "correct": correct, "logprob": logprob,
                                                "tokens": ["a"] * len(rewards), "rewards": rewards}
    records = [{"question": "q1", "gold": "1", "samples": [sample(True, [1.0, 2.0], -0.5),
                                                           sample(False, [-1.0, 0.0, -2.0], -0.2)]},
               {"question": "q2", "gold": "2", "samples": [sample(False, [0.5], -0.3)]}]
    write_jsonl(tmp_path / "run" / "eval_samples.jsonl", records)
    assert plot.histogram_pairs(tmp_path / "run") == [("trace reward (mean f)", [1.5], [-1.0, 0.5]),
                                                      ("policy mean log-prob", [-0.5], [-0.2, -0.3])]
    write_jsonl(tmp_path / "run" / "metrics.jsonl", airl_rows())
    out = plot.plot_runs([tmp_path / "run"])
    assert out == tmp_path / "run" / "curves.png" and out.read_bytes().startswith(PNG)
    for s in records[0]["samples"] + records[1]["samples"]:
        s["rewards"] = None  # no reward model: only the log-prob histogram
    write_jsonl(tmp_path / "run" / "eval_samples.jsonl", records)
    assert [title for title, _, _ in plot.histogram_pairs(tmp_path / "run")] == ["policy mean log-prob"]


def test_plot_command_and_its_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / "run" / "metrics.jsonl", airl_rows())
    result = invoke("plot", str(tmp_path / "run"), "--out", str(tmp_path / "c.png"))
    assert result.exit_code == 0, result.output
    assert f"figure: {tmp_path / 'c.png'}" in result.stdout and (tmp_path / "c.png").is_file()
    (tmp_path / "empty").mkdir()
    result = invoke("plot", str(tmp_path / "run"), str(tmp_path / "empty"))
    assert result.exit_code == 1 and result.output.strip() == f"error: {tmp_path / 'empty'}: no metrics.jsonl (not " \
                                                              "a minirl run folder?)"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"iter": 1}\n{"iter": 2, "reward\n')
    result = invoke("plot", str(tmp_path / "bad"))
    assert result.exit_code == 1 and "metrics.jsonl, line 2: not JSON" in result.output
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    result = invoke("plot", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert result.output.strip() == "error: minirl plot needs matplotlib: pip install -e '.[plot]'"


@pytest.mark.parametrize(("out", "message"), [
    ("c.jsonl", "--out {tmp}/c.jsonl: a figure is a .png/.pdf/.svg file (no suffix: .png), not .jsonl"),
    ("d", "--out {tmp}/d: is a folder; name the figure, e.g. --out {tmp}/d/curves.png"),
    ("e", "--out {tmp}/e: {tmp}/e.png is a folder"),
    ("f/c.png", "--out {tmp}/f/c.png: {tmp}/f is not a folder"),
])
def test_plot_refuses_an_out_it_cannot_write(tmp_path: Path, out: str, message: str) -> None:
    write_jsonl(tmp_path / "run" / "metrics.jsonl", airl_rows())
    (tmp_path / "d").mkdir()
    (tmp_path / "e.png").mkdir()
    (tmp_path / "f").write_text("a file")
    result = invoke("plot", str(tmp_path / "run"), "--out", str(tmp_path / out))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.output.strip() == "error: " + message.format(tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "e.png", "f", "run"]  # nothing written


def test_plot_reports_the_file_it_wrote(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "run" / "metrics.jsonl", airl_rows())
    result = invoke("plot", str(tmp_path / "run"), "--out", str(tmp_path / "c"))  # no suffix: matplotlib adds .png
    assert result.exit_code == 0 and result.output.strip() == f"figure: {tmp_path / 'c.png'}", result.output
    assert (tmp_path / "c.png").read_bytes().startswith(PNG)
    out = plot.plot_runs([tmp_path / "run"], tmp_path / "new" / "c.svg")  # missing folders are created
    assert out == tmp_path / "new" / "c.svg" and out.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("record", [{"samples": "x"}, {"samples": [1]}, {"samples": [{"rewards": [1.0]}]},
                                    {"samples": [{"correct": "yes"}]}, {"samples": [{"correct": True, "rewards": "x"}]},
                                    {"samples": [{"correct": True, "rewards": [1.0, "x"]}]},
                                    {"samples": [{"correct": False, "logprob": "x"}]}])
def test_a_bad_eval_samples_file_is_one_error_line(tmp_path: Path, record: dict) -> None:
    write_jsonl(tmp_path / "run" / "metrics.jsonl", airl_rows())
    good = {"correct": True, "rewards": None, "logprob": float("nan")}  # no reward model; a NaN log-prob is a number
    write_jsonl(tmp_path / "run" / "eval_samples.jsonl", [{"samples": [good]}, record])
    result = invoke("plot", str(tmp_path / "run"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.output.strip() == (f"error: {tmp_path / 'run' / 'eval_samples.jsonl'}, line 2: not a sample record "
                                     "(its 'samples' a list of objects, each with 'correct' true or false, 'rewards' "
                                     "a list of numbers or null, 'logprob' a number or null)")


# ---------------------------------------------------------------- HTML


def test_save_html_keeps_tokens_and_colours(tmp_path: Path) -> None:
    tokens, rewards = ["Gus", " has", " 3", " apples", ".\n", "####", " 7"], [0.1, 0.05, 1.0, 0.2, 0.0, 0.2, -1.0]
    viz.save_html(tmp_path / "trace.html", lambda console: viz.print_trace(tokens, rewards, console, title="demo"))
    html = (tmp_path / "trace.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "demo" in html
    assert all(token.strip() in html for token in tokens)
    assert "background-color: #2166ac" in html and "background-color: #e66101" in html  # the blue and orange ends
    viz.save_html(tmp_path / "rg.html", lambda console: viz.print_trace(tokens, rewards, console, palette="red-green"))
    assert "background-color: #d73027" in (tmp_path / "rg.html").read_text()  # the red end


def test_inspect_html(run_dir: Path, tmp_path: Path) -> None:
    trace = "Gus has 3 apples.\n#### 3"
    result = invoke("inspect", "--run", str(run_dir), "--trace", trace, "--html", str(tmp_path / "view.html"))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "view.html").read_text()
    assert "apples" in html and "held-out question 0" in html and "background-color" in html
    result = invoke("inspect", "--run", str(run_dir), "--palette", "rainbow")
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: --palette 'rainbow'")


# ---------------------------------------------------------------- a micro run: its figure and model cards


@pytest.fixture(scope="module")
def micro_airl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro AIRL run of 2 iterations from a micro base policy pretrained for 10 steps (seconds)."""
    from minirl.train import train

    folder = tmp_path_factory.mktemp("runs")
    small = dict(size="micro", n_corpus=300, n_demos=40, eval_questions=4, final_questions=4, eval_samples=2,
                 max_new_tokens=40)
    train(from_preset("tiny", "pretrain", out=str(folder / "base"), steps=10, prompts_per_iter=8, eval_every=10,
                      **small))
    train(from_preset("tiny", "airl", init=str(folder / "base"), out=str(folder / "airl"), steps=2, eval_every=2,
                      disc_warmup=2, warmup_pool=4, prompts_per_iter=2, samples_per_prompt=2, minibatch_size=4,
                      disc_batch=2, kl_beta=0.02, **small))
    return folder / "airl"


def test_figure_of_a_micro_run(micro_airl: Path) -> None:
    rows = plot.read_metrics(micro_airl)
    titles = [title for title, _, _ in plot.curve_panels({"airl": rows})]
    auroc = plot.logged(rows, ("reward_auroc",))  # null (undefined) when every sample of 4 questions is wrong
    assert titles == [title for title, _, keys in plot.CURVES[:-1] if auroc or "reward_auroc" not in keys]
    assert [title for title, _, _ in plot.histogram_pairs(micro_airl)] == ["trace reward (mean f)",
                                                                          "policy mean log-prob"]
    result = invoke("plot", str(micro_airl), str(micro_airl.parent / "base"), "--out", str(micro_airl / "both.png"))
    assert result.exit_code == 0, result.output
    assert (micro_airl / "both.png").read_bytes().startswith(PNG)


def test_saved_models_carry_a_model_card(micro_airl: Path) -> None:
    summary = json.loads((micro_airl / "summary.json").read_text())
    policy_card, reward_card = ((micro_airl / kind / "README.md").read_text() for kind in ("policy", "reward"))
    for card in (policy_card, reward_card):
        assert card.startswith("---\nlibrary_name: transformers\n")
        assert "| algo | `airl` |" in card and "| disc_warmup | `2` |" in card and "| kl_beta | `0.02` |" in card
        assert f"| sampled_acc | {summary['sampled_acc']:.3f} |" in card and "wall_s" not in card
        assert "AutoModelForCausalLM.from_pretrained" in card
    assert f"best sampled accuracy on validation problems (step {summary['best_step']})" in policy_card
    assert f'load_lm("{micro_airl / "policy"}")' in policy_card
    assert f'from_pretrained("{micro_airl / "reward" / "backbone"}")' in reward_card
    assert f'RewardModel.load("{micro_airl / "reward"}")' in reward_card and "`token` head" in reward_card
    assert "## How it was trained" in (micro_airl.parent / "base" / "policy" / "README.md").read_text()
    assert not (micro_airl.parent / "base" / "reward").exists()
    card = write_model_card(micro_airl / "policy", "policy", {"algo": "sft", "lr": 1e-3}, None).read_text()
    assert "supervised fine-tuning" in card and "Not evaluated." in card and "| lr | `0.001` |" in card
    settings = {"algo": "reward", "lr": 1e-3, "train_layers": 8, "perturbed_labels": "line", "kl_beta": 0.1}
    card = write_model_card(micro_airl / "reward", "reward", settings, None).read_text()
    assert "| train_layers | `8` |" in card and "| perturbed_labels | `line` |" in card  # the reward model's settings
    assert "kl_beta" not in card  # PPO's settings: not a reward model's


# ---------------------------------------------------------------- --report-to tensorboard


def test_tensorboard_gets_the_numbers_of_metrics_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minirl.config import TrainConfig

    run = runs.start(tmp_path / "run", TrainConfig(report_to="tensorboard"))
    run.log({"warmup_step": 1, "disc_loss": 0.69})
    run.log({"iter": 1, "approx_kl": 0.01, "flag": True, "kl_ref": None, "note": "text"})
    run.log({"iter": 2, "approx_kl": 0.02})
    run.log({"eval_step": 2, "sampled_acc": 0.5, "best_step": 2})
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"warmup_step/disc_loss", "iter/approx_kl", "eval_step/sampled_acc", "eval_step/best_step"}
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("iter/approx_kl")] == [(1, 0.01), (2, 0.02)]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4  # metrics.jsonl as before


def test_report_to_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("train", "--report-to", "wandb", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and result.output.strip() == "error: --report-to 'wandb': choose from '', tensorboard"
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed: find_spec gives None
    result = invoke("train", "--report-to", "tensorboard", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert result.output.strip() == "error: --report-to tensorboard needs tensorboard: pip install -e '.[track]'"
    assert not (tmp_path / "run").exists()  # refused before any work

"""The imitation-vs-IRL study (benchmarks/imitation_vs_irl.py): which runs it trains, from what, and its table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import typer

from minirl.traces import Trace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def study(monkeypatch):
    spec = importlib.util.spec_from_file_location("imitation_vs_irl", ROOT / "benchmarks" / "imitation_vs_irl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = []
    monkeypatch.setattr(module, "ensure_pretrained", built.append)  # no pretraining in a test
    module.built = built
    return module


def test_every_arm_starts_from_the_seeds_base_policy_or_its_sft(study, tmp_path) -> None:
    configs = study.study_configs(seed=1, demos=50, out=tmp_path, final_questions=200)
    [base] = study.built
    assert (base.algo, base.seed, base.out) == ("pretrain", 1, "runs/base-tiny-s1")  # the base run, not an AIRL run
    assert set(configs) == {*study.ARMS, "reward"}  # the reward that airl-sft is taught by: not a policy, no row
    assert configs["sft"].init == configs["airl"].init == configs["outcome"].init == "runs/base-tiny-s1"
    assert configs["airl-sft"].init == configs["sft"].out == str(tmp_path / "d50-s1" / "sft")
    assert (configs["sft"].algo, configs["airl"].algo, configs["outcome"].algo) == ("sft", "airl", "outcome")
    assert all(c.seed == 1 and c.final_questions == 200 for c in configs.values())
    assert configs["sft"].n_demos == configs["airl"].n_demos == configs["airl-sft"].n_demos == 50
    for key, value in study.FROM_SFT.items():
        assert getattr(configs["airl-sft"], key) == value
    assert configs["airl-sft"].reward_from == configs["reward"].out  # taught by a reward learned against the base
    assert (configs["reward"].init, configs["reward"].steps, configs["reward"].n_demos) == ("runs/base-tiny-s1", 0, 50)
    assert list(configs).index("reward") < list(configs).index("airl-sft")  # trained before it is needed
    assert configs["airl-sft"].disc_steps == 0 and configs["airl"].disc_steps == 1
    assert configs["outcome"].out == str(tmp_path / "outcome-s1")  # needs no demonstrations: once a seed
    assert configs["airl"].head == configs["airl-sft"].head == "token"
    hybrid = study.study_configs(seed=1, demos=50, out=tmp_path, final_questions=200, head="hybrid")
    assert hybrid["airl"].head == hybrid["airl-sft"].head == hybrid["reward"].head == "hybrid"  # the AIRL arms only
    assert hybrid["sft"] == configs["sft"] and hybrid["outcome"] == configs["outcome"]


def test_the_table_is_the_mean_and_spread_over_seeds(study) -> None:
    def figures(acc: float, bo8: float | None = None) -> dict:
        cell = {"sampled_acc": acc, "greedy_acc": acc, "pass@8": 0.9, "maj@8": acc, "bo8_logprob": acc}
        return cell if bo8 is None else {**cell, "bo8_reward": bo8}

    results = {("sft", 50, 0): figures(0.4), ("sft", 50, 1): figures(0.6),
               ("airl", 50, 0): figures(0.5, bo8=0.7), ("airl", 50, 1): figures(0.5, bo8=0.9)}
    markdown, summary = study.table(results, [0, 1], [50])
    assert summary["sft/d50"]["sampled_acc"] == {"mean": 0.5, "min": 0.4, "max": 0.6, "seeds": [0.4, 0.6]}
    # gain recovered: (0.7 - 0.5) / (0.9 - 0.5) = 0.5 and (0.9 - 0.5) / 0.4 = 1.0: mean 75 %
    assert "| 50 | airl | 0.500 [0.500, 0.500] |" in markdown and "0.800 [0.700, 0.900] (75%)" in markdown
    assert "| 50 | sft | 0.500 [0.400, 0.600] |" in markdown
    assert "airl-sft" not in markdown  # arms with no runs are left out


def test_the_gain_over_sft_is_paired_by_question(study, tmp_path) -> None:
    def write(run: str, correct: dict[str, list[bool]]) -> Path:
        folder = tmp_path / run
        folder.mkdir()
        rows = [{"question": q, "samples": [{"correct": c} for c in cs]} for q, cs in correct.items()]
        (folder / "eval_samples.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        return folder

    # seed 0: question a 0/2 -> 1/2, b 2/2 -> 2/2: differences 0.5, 0 (mean 0.25); seed 1: 1/2 -> 1/2 twice: 0
    pairs = [(write("sft0", {"a": [False, False], "b": [True, True]}),
              write("arm0", {"b": [True, True], "a": [True, False]})),  # another order: paired by question
             (write("sft1", {"c": [True, False], "d": [False, True]}),
              write("arm1", {"c": [False, True], "d": [True, False]}))]
    gain, low, high = study.paired_gain(pairs)
    assert gain == pytest.approx(0.125)  # the mean over seeds of 0.25 and 0
    assert 0.0 <= low <= gain <= high <= 0.25  # resampled questions: seed 0 gives 0, 0.25 or 0.5 over 2, seed 1 0
    assert low < high
    assert study.paired_gain(pairs[1:]) == (0.0, 0.0, 0.0)  # no difference on any question: a zero interval


def test_the_heldout_benchmark_refuses_a_bad_folder_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("reward_heldout", ROOT / "benchmarks" / "reward_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for run, out, code, says in ((tmp_path / "nothing", None, 1, "config.json: unreadable"),
                                 (tmp_path, tmp_path / "no" / "such.json", 2, "--out")):  # before any scoring
        with pytest.raises(typer.Exit) as stop:
            module.main(run, out, 0)
        assert stop.value.exit_code == code
        err = capsys.readouterr().err
        assert err.startswith("error:") and says in err and "Traceback" not in err
    # --validation asks for unseen training problems: a run whose demonstrations used them all has none
    monkeypatch.setattr(module.folders, "saved_config", lambda run: {"n_demos": 5})
    monkeypatch.setattr(module.runs, "load_run", lambda run: (None, None, None, None))
    monkeypatch.setattr(module, "load_tasks", lambda cfg: {"corpus": [{}] * 5, "rl": []})
    with pytest.raises(typer.Exit) as stop:
        module.main(tmp_path, None, 10)
    assert stop.value.exit_code == 2 and "--validation 10: all 5 training problems" in capsys.readouterr().err


def test_the_heldout_benchmark_tells_where_the_lowest_token_lies_by_hand() -> None:
    spec = importlib.util.spec_from_file_location("reward_heldout", ROOT / "benchmarks" / "reward_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expert = Trace("expert", 0, [9], [1, 2, 3, 4, 5, 6])
    copies = [Trace("perturbed", 0, [9], [1, 7, 3, 8, 5, 6], target=(1, 2), kind="numbers") for _ in range(4)]
    other = Trace("perturbed", 0, [9], [1, 2, 0, 4, 5, 6], target=(2, 3), kind="operator")
    lowest = [1, 3, 4, 0, 2]  # the first change, the later shifted number, unchanged text after, before; a hit
    scores = [{"reward_lowest": 0}] + [{"reward_lowest": i} for i in lowest]
    where = module.where_lowest([expert, *copies, other], scores)
    assert where == {"numbers": dict(zip(module.PLACES, (1, 1, 1, 1))),
                     "operator": dict(zip(module.PLACES, (1, 0, 0, 0)))}


def test_the_study_refuses_a_bad_option_before_building_anything(study, tmp_path, capsys) -> None:
    with pytest.raises(typer.Exit) as stop:
        study.main(seeds=[0], demos=[50], final_questions=200, head="nonsense", out=tmp_path / "study")
    assert stop.value.exit_code == 2 and capsys.readouterr().err.startswith("error: --head 'nonsense'")
    assert study.built == [] and not (tmp_path / "study").exists()  # no base policy, no folder


def test_an_interrupted_run_of_the_study_continues_from_its_checkpoint(study, tmp_path, monkeypatch) -> None:
    from dataclasses import asdict, replace

    import minirl
    from minirl import folders
    from minirl.config import TrainConfig

    cfg = replace(TrainConfig(), algo="sft", out=str(tmp_path / "sft"))
    started = []
    monkeypatch.setattr(study, "train", lambda c: started.append(c) or {"sampled_acc": 0.5})
    study.run(cfg)  # nothing there: a fresh run
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**asdict(cfg), "config_hash": folders.config_hash(cfg),
                                                    "code_hash": folders.code_hash(),
                                                    "minirl_version": minirl.__version__}))
    (folder / "checkpoint.json").write_text(json.dumps({"folder": "checkpoint-000050", "step": 50}))
    study.run(cfg)  # interrupted at step 50 under these settings: continued
    study.run(replace(cfg, lr=1e-3))  # other settings: trained again
    assert [(c.resume, c.overwrite) for c in started] == [(False, True), (True, False), (False, True)]

"""Bad run folders given to the scripts beside the CLI (benchmarks/reward_heldout.py, the tutorial steps): one
`error:` line and exit code 1, never a traceback. The tutorial's runs are stand-ins (the settings files of a run,
no weights): nothing is trained, the file takes seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import typer

import minirl
from minirl import folders
from minirl.config import from_preset

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_heldout_refuses_a_run_without_a_reward_model(run_dir, tmp_path, capsys) -> None:
    run = tmp_path / "base"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("reward"))
    with pytest.raises(typer.Exit) as stop:
        load_script(ROOT / "benchmarks" / "reward_heldout.py").main(run, None, 0)
    err = capsys.readouterr().err
    assert stop.value.exit_code == 1 and "Traceback" not in err
    assert err.strip() == f"error: {run}: no reward model in this run (no reward/ inside); give a finished " \
                          "`--algo reward` run"


# ---------------------------------------------------------------- tutorial steps


@pytest.fixture
def common(tmp_path, monkeypatch):
    """tutorial/_common.py as a step sees it in reduced mode, its runs in tmp_path/runs."""
    monkeypatch.setenv("MINIRL_TUTORIAL_FAST", "1")
    monkeypatch.setenv("MINIRL_TUTORIAL_RUNS", str(tmp_path / "runs"))
    return load_script(ROOT / "tutorial" / "_common.py")


def write_base_settings(common, finished: bool = True) -> Path:
    """The config.json of the base run that ensure_run("pretrain") trains (and a summary.json when `finished`):
    a run it reuses without loading it, in no time."""
    folder = common.run_folder("pretrain")
    cfg = from_preset("tiny", "pretrain", out=str(folder), init="", overwrite=True, **common.fast_overrides())
    folder.mkdir(parents=True)
    record = {**asdict(cfg), "config_hash": folders.config_hash(cfg), "minirl_version": minirl.__version__}
    (folder / "config.json").write_text(json.dumps(record))
    if finished:
        (folder / "summary.json").write_text("{}")
    return folder


def run_step(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MINIRL_TUTORIAL_FAST": "1", "MINIRL_TUTORIAL_RUNS": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(ROOT / "tutorial" / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The step stopped with exit code 1 and one `error:` line, no traceback; returns that line."""
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("script", ["04_ppo.py", "05_rerank.py"])
def test_a_tutorial_step_stops_in_one_line_on_a_corrupt_run(common, tmp_path, script) -> None:
    write_base_settings(common)
    airl = common.run_folder("airl")
    airl.mkdir()
    (airl / "config.json").write_text('{"algo": ')
    line = one_error_line(run_step(script, tmp_path))
    assert line == f"error: {airl / 'config.json'}: unreadable, empty or not a JSON object (the run's settings); " \
                   f"delete {airl} to train it again"


def test_a_tutorial_step_refuses_a_folder_of_other_files_before_any_work(common, tmp_path) -> None:
    base = common.run_folder("pretrain")
    base.mkdir(parents=True)
    (base / "notes.txt").write_text("mine")
    line = one_error_line(run_step("02_base_policy.py", tmp_path))
    assert line.startswith(f"error: {base} is a folder of other files, not a minirl run (no config.json); move it")
    assert (base / "notes.txt").read_text() == "mine" and sorted(p.name for p in base.iterdir()) == ["notes.txt"]


def test_a_tutorial_step_stops_in_one_line_on_a_run_it_cannot_load(common, tmp_path) -> None:
    base = write_base_settings(common)  # settings and summary, no policy/
    line = one_error_line(run_step("03_discriminator.py", tmp_path))
    assert line == f"error: {base}: not a minirl run folder (no policy/ inside); delete {base} to train it again"


def test_an_unfinished_base_run_says_why_it_is_trained_again(common, monkeypatch, capsys) -> None:
    trained = []
    monkeypatch.setattr("minirl.train.train", trained.append)
    base = write_base_settings(common, finished=False)
    assert common.ensure_run("pretrain") == base and [cfg.out for cfg in trained] == [str(base)]
    assert f"{base}: training it now (pretrain; unfinished: no summary.json)" in capsys.readouterr().out

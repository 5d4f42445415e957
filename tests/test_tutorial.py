"""Every tutorial step runs end to end in reduced mode and prints the line it promises (tutorial/README.md).

Each script in tutorial/ runs as a student would run it (`python tutorial/0X_....py`), with
MINIRL_TUTORIAL_FAST=1 (micro model, a few steps) and its run folders in a temporary directory shared by the
steps, so that later steps reuse the base policy and the AIRL run instead of training them again. A new script
is picked up by the glob; `test_every_script_promises_a_line` then fails until PROMISED says what it must print.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "tutorial").glob("[0-9][0-9]_*.py"))

# What each step's docstring says it prints, checked in its stdout (the lines that carry the step's result).
PROMISED: dict[str, tuple[str, ...]] = {
    "01_data.py": ("-- expert solution", "misconceived solution, holding 'half_as_many'", "held-out test problems:",
                   "perturbed experts (M3)", "answer extraction", "== GSM8K"),
    "02_base_policy.py": ("base policy (pretrained)", "SFT on demonstrations", "base policy: log-prob AUROC",
                          "figure: "),
    "03_discriminator.py": ("mean logit:", "within-question AUROC: learned reward",
                            "same held-out samples as before: True", "per problem kind", "figure: "),
    "04_ppo.py": ("training log", "held-out evaluation", "sampled accuracy: base", "figure: "),
    "05_rerank.py": ("best-of-4: success@k", "reward: mean", "oracle", "success@1: learned reward"),
    "06_inspect.py": ("perturbed expert (operator", "marked change", "error localisation on", "Hit@1 on"),
    "07_gsm8k_gpu.py": ("minirl train --preset gsm8k-qwen0.5b --algo airl", "494,032,768",
                        "estimated peak during a PPO update"),
}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tutorial-runs")


def test_every_script_promises_a_line() -> None:
    assert SCRIPTS, "no tutorial scripts found"
    assert {s.name for s in SCRIPTS} == set(PROMISED), "add the new script's promised lines to PROMISED"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_runs_in_reduced_mode(script: Path, runs_dir: Path) -> None:
    env = {**os.environ, "MINIRL_TUTORIAL_FAST": "1", "MINIRL_TUTORIAL_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1",
           "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # cwd is the temporary directory too, so that nothing (not even a default runs/ folder) lands in the repo
    proc = subprocess.run([sys.executable, str(script)], cwd=runs_dir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    missing = [line for line in PROMISED.get(script.name, ()) if line not in proc.stdout]
    assert not missing, f"{script.name} did not print {missing}:\n{proc.stdout[-3000:]}"

"""What every tutorial step shares: the reduced-mode switch, the runs folder, and "build the run if missing".

MINIRL_TUTORIAL_FAST=1 shrinks every step to seconds (a micro model, a 300-problem corpus, 3 optimiser steps)
so that the test suite can run the whole tutorial; its numbers mean nothing. Without it the steps use the
`tiny` CPU preset as a student would. MINIRL_TUTORIAL_RUNS moves the run folders (default runs/tutorial);
MINIRL_GSM8K_DIR names an offline copy of GSM8K (train.jsonl, test.jsonl) for steps 01 and 07.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

FAST = os.environ.get("MINIRL_TUTORIAL_FAST") == "1"
RUNS = Path(os.environ.get("MINIRL_TUTORIAL_RUNS", "runs/tutorial"))
# an offline copy of GSM8K (a folder with train.jsonl and test.jsonl), when MINIRL_GSM8K_DIR names one
GSM8K_DIR = Path(os.environ["MINIRL_GSM8K_DIR"]).expanduser() if os.environ.get("MINIRL_GSM8K_DIR") else None


def pick(full, fast):
    """`full` normally, `fast` in reduced mode: for the few sizes a script chooses itself."""
    return fast if FAST else full


def fast_overrides() -> dict:
    """TrainConfig overrides for reduced mode (none at full size)."""
    if not FAST:
        return {}
    return dict(size="micro", n_corpus=300, n_demos=40, steps=3, eval_every=3, prompts_per_iter=4,
                samples_per_prompt=2, minibatch_size=8, final_questions=8, eval_questions=4, eval_samples=2,
                disc_warmup=3, disc_batch=4, max_new_tokens=40)


def run_folder(algo: str) -> Path:
    """Where step 02 (pretrain -> base, sft) and step 04 (airl) keep their runs."""
    return RUNS / f"{'base' if algo == 'pretrain' else algo}-tiny"


def summary(folder: Path) -> dict:
    """A run's summary.json; a figure that was undefined (JSON null, e.g. an AUROC with no wrong sample) is nan."""
    return {k: float("nan") if v is None else v for k, v in json.loads((folder / "summary.json").read_text()).items()}


def save_figure(folders: list[Path], out: Path) -> None:
    """Draw the runs' curves and score histograms (minirl.plot) into `out` and say where it is; without matplotlib,
    one line saying how to get it."""
    if importlib.util.find_spec("matplotlib") is None:
        print("figure: not drawn, it needs matplotlib: pip install -e '.[plot]'")
        return
    from minirl.plot import plot_runs

    print(f"figure: {plot_runs(folders, out)}  (training curves; right vs wrong samples' scores)")


def ensure_run(algo: str) -> Path:
    """The run of step 02 or 04, trained now (exactly as that step does) when it is missing or was trained with
    other settings."""
    from minirl import runs
    from minirl.config import from_preset
    from minirl.train import train

    folder = run_folder(algo)
    init = "" if algo == "pretrain" else str(ensure_run("pretrain"))
    cfg = from_preset("tiny", algo, out=str(folder), init=init, overwrite=True, **fast_overrides())
    changed = runs.differences(folder, cfg, code=False) if (folder / "config.json").exists() else "missing"
    if (folder / "summary.json").exists() and not changed:
        print(f"reusing {folder} (delete it to train again)")
        return folder
    print(f"{folder}: training it now ({algo}; {changed}), as the earlier step would")
    train(cfg)
    return folder

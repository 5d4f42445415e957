"""What every tutorial step shares: the reduced-mode switch, the runs folder, and "build the run if missing".

MINIRL_TUTORIAL_FAST=1 shrinks every step to seconds (a micro model, a 300-problem corpus, 3 optimiser steps)
so that the test suite can run the whole tutorial; its numbers mean nothing. Without it the steps use the
`tiny` CPU preset as a student would. MINIRL_TUTORIAL_RUNS moves the run folders (default runs/tutorial);
MINIRL_GSM8K_DIR names an offline copy of GSM8K (train.jsonl, test.jsonl) for steps 01 and 07.

A run folder a step cannot use (settings or weights that cannot be read, someone else's files at its path) stops
the step with one `error:` line and exit code 1, as the CLI does, saying what to do: the tutorial has no
--overwrite, a run is trained again once its folder is deleted.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from minirl.config import TrainConfig

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
    from minirl.folders import read_json_object

    if (saved := read_json_object(folder / "summary.json")) is None:
        stop(f"{folder / 'summary.json'}: unreadable, empty or not a JSON object (the run's final evaluation); "
             f"{train_again(folder)}")
    return {k: float("nan") if v is None else v for k, v in saved.items()}


def load_run(folder: Path) -> tuple:
    """minirl.runs.load_run: (policy, tokenizer, reward model or None, config dict) of a finished run folder."""
    from minirl import runs

    with one_line_errors(f"; {train_again(folder)}"):
        return runs.load_run(folder)


def save_figure(folders: list[Path], out: Path) -> None:
    """Draw the runs' curves and score histograms (minirl.plot) into `out` and say where it is; without matplotlib,
    one line saying how to get it."""
    if importlib.util.find_spec("matplotlib") is None:
        print("figure: not drawn, it needs matplotlib: pip install -e '.[plot]'")
        return
    from minirl.plot import plot_runs

    print(f"figure: {plot_runs(folders, out)}  (training curves; right vs wrong samples' scores)")


def ensure_run(algo: str) -> Path:
    """The run of step 02 or 04, trained now (exactly as that step does) when it is missing, unfinished or was
    trained with other settings."""
    from minirl.config import from_preset
    from minirl.train import train

    folder = run_folder(algo)
    with one_line_errors():
        check_run_folder(folder)  # before the base policy is trained for it
    init = "" if algo == "pretrain" else str(ensure_run("pretrain"))
    cfg = from_preset("tiny", algo, out=str(folder), init=init, overwrite=True, **fast_overrides())
    changed = why_train(folder, cfg)
    if not changed:
        print(f"reusing {folder} (delete it to train again)")
        return folder
    print(f"{folder}: training it now ({algo}; {changed}), as the earlier step would")
    with one_line_errors():
        train(cfg)
    return folder


def why_train(folder: Path, cfg: TrainConfig, code: bool = False) -> str:
    """Why the run in `folder` is trained now: missing, what differs from `cfg` (with `code`, also a change of
    minirl's source) or unfinished; "" for a finished run with these settings. Anything else in its
    place is one `error:` line (check_run_folder)."""
    from minirl import folders

    with one_line_errors():
        check_run_folder(folder)
        if not (folder / "config.json").exists():
            return "missing"
        changed = folders.differences(folder, cfg, code)
    return changed or ("" if (folder / "summary.json").exists() else "unfinished: no summary.json")


def check_run_folder(folder: Path) -> None:
    """Refuse (RunError) what a step can neither reuse nor train into: a file or a folder of other files at the
    run's path (never deleted: they may be someone's), a run whose settings cannot be read."""
    from minirl import folders

    config = folder / "config.json"
    if config.exists() and "config_hash" not in folders.saved_config(folder, f"; {train_again(folder)}"):
        raise folders.RunError(f"{config}: not a minirl run's settings; {train_again(folder)}")
    if not config.exists() and folder.exists() and not is_empty_folder(folder):
        what = "a folder of other files" if folder.is_dir() else "a file"
        raise folders.RunError(f"{folder} is {what}, not a minirl run (no config.json); move it away, or set "
                               "MINIRL_TUTORIAL_RUNS to another folder, so that the tutorial can train its run there")


def is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and all(p.name.startswith(".") for p in folder.iterdir())  # .DS_Store is no file


def train_again(folder: Path) -> str:
    """The tutorial's way to start a run afresh (it has no --overwrite)."""
    return f"delete {folder} to train it again"


@contextmanager
def one_line_errors(hint: str = "") -> Iterator[None]:
    """What the CLI's `user_errors` does, for a tutorial step: a run or file it cannot use is one `error:` line
    (with `hint` after it) and exit code 1, not a traceback; bugs still raise."""
    from minirl.config import UserError

    try:
        yield
    except (UserError, OSError) as e:  # OSError: a file that cannot be read or written
        stop(f"{e}{hint}")


def stop(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)

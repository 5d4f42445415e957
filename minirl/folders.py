"""Run folders before a run: may this one be written, reused or continued, and is it some other process's?

`train` checks all of it before any work (`check_folder`), so that a refused run creates no folder and clears
nothing; `rerank`, `inspect` and `plot` check their outputs the same way (`check_output`). The rules:
  - a folder that is not a minirl run's (files without config.json, or a config.json of a model) is never cleared;
  - a run under other settings or other minirl code is never reused silently, a finished one is never redone, and an
    unfinished one (a checkpoint) is never started afresh without --overwrite: --resume continues it;
  - an output is never one of the command's inputs, nor a file of a run folder it reads;
  - one process trains in a folder at a time: `lock` writes its pid to .lock, which a dead process's stale lock
    does not block.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import minirl
from minirl.config import TrainConfig, UserError


class RunError(UserError):
    """A run folder that cannot be used as asked: the CLI prints it as one line."""


# how a run is started or watched, or how much memory a step takes (--resume after running out of memory may
# lower it), not what it computes
NOT_HASHED = ("resume", "overwrite", "out", "report_to", "micro_batch_size")
# settings that name a file or folder: two spellings of one path are one setting
PATH_SETTINGS = ("data", "test_data", "init", "reward_init", "reward_from")


def config_hash(cfg: TrainConfig) -> str:
    """A short hash of everything that changes what a run computes, and of the minirl version."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_HASHED}
    text = json.dumps({"minirl": minirl.__version__, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_hash() -> str:
    """A short hash of minirl's own source: a run trained by other code is not the same run (a student who
    edits one line of the PPO loss must see new numbers, not a reused folder)."""
    digest = hashlib.sha256()
    for path in sorted(Path(minirl.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def differences(folder: Path, cfg: TrainConfig, code: bool = True) -> str:
    """What differs between the run in `folder` and `cfg` (settings, minirl version, and with `code` the source),
    "" when nothing does. A setting that the run's version did not have yet counts as its default: that is what
    the run did."""
    old = {**asdict(TrainConfig()), **saved_config(folder, "; --overwrite replaces the run")}
    changed = [k for k, v in asdict(cfg).items() if k not in NOT_HASHED and not same_setting(k, old[k], v)]
    if changed:
        return ", ".join(f"{k} {old[k]!r} -> {getattr(cfg, k)!r}" for k in changed[:4])
    if old.get("minirl_version") != minirl.__version__:
        return f"minirl version {old.get('minirl_version')} -> {minirl.__version__}"
    if old.get("data_hash", data_hash(cfg)) != data_hash(cfg):  # runs written before data_hash: not compared
        return "the contents of --data or --test-data changed"
    return "minirl's source code changed" if code and old.get("code_hash") != code_hash() else ""


def same_setting(name: str, old: object, new: object) -> bool:
    """Equal, or, for a setting that names a file or folder, two spellings of one that exists: a run given
    `--data gsm8k/train.jsonl` resumes with `--data ./gsm8k/train.jsonl` or its absolute path."""
    if old == new:
        return True
    if name not in PATH_SETTINGS or not (isinstance(old, str) and isinstance(new, str) and old and new):
        return False
    try:
        return os.path.samefile(os.path.expanduser(old), os.path.expanduser(new))
    except OSError:  # one of them does not exist (or is a hub id): compared as text, they differ
        return False


def data_hash(cfg: TrainConfig) -> str:
    """A short hash of the local data files `cfg` reads ("" for the synthetic world and hub splits): a run resumed
    or reused on a file that was replaced meanwhile would mix two data sets."""
    files = [path for name in (cfg.data, cfg.test_data) if name and (path := Path(name).expanduser()).is_file()]
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_json_object(path: Path) -> dict | None:
    """The JSON object in `path`; None when the file is missing, unreadable, empty, cut short or not an object."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: empty, cut short, not JSON, not UTF-8
        return None
    return saved if isinstance(saved, dict) else None


def saved_config(folder: Path, hint: str = "") -> dict:
    if (saved := read_json_object(folder / "config.json")) is None:
        raise RunError(f"{folder / 'config.json'}: unreadable, empty or not a JSON object (the run's settings){hint}")
    return saved


def check_reusable(folder: Path, cfg: TrainConfig, code: bool = True) -> None:
    """Refuse to mix runs: a folder holding a run under other settings or code (or a finished one) is never
    reused silently. --resume continues the same settings; --overwrite starts again. A folder that is not a run's
    is never cleared: its files are someone's."""
    if not (folder / "config.json").exists():
        if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):  # .DS_Store is no file
            raise RunError(f"{folder} holds other files and no minirl run (no config.json); choose a new or empty "
                           "--out")
        return
    try:
        saved = saved_config(folder, "; --overwrite replaces the run")
    except RunError:
        if cfg.overwrite:  # a run's settings that cannot be read: replaced
            return
        raise
    if "config_hash" not in saved:
        raise RunError(f"{folder}/config.json is not a minirl run's; choose a new or empty --out")
    if cfg.overwrite:
        return
    if what := differences(folder, cfg, code):
        raise RunError(f"{folder} holds a run with other settings ({what}); choose another --out or give --overwrite")
    if (folder / "summary.json").exists() and not cfg.resume:
        raise RunError(f"{folder} already holds a finished run with these settings; --overwrite trains it again")
    if (step := last_checkpoint(folder)) is not None and not cfg.resume:  # a fresh start would delete its work
        raise RunError(f"{folder} holds an unfinished run with these settings (checkpoint of step {step}); --resume "
                       "continues it, --overwrite starts again")


def check_folder(folder: Path, cfg: TrainConfig) -> None:
    """What `start` would refuse, checked before any work: a place where the folder cannot be written, a folder
    another live process trains in, a starting model inside the folder a fresh run clears, a folder holding another
    run, and --resume of a run with no checkpoint or of a finished one."""
    check_output(folder, "--out", folder=True)
    check_not_running(folder)
    for option, given in (("--init", cfg.init), ("--reward-init", cfg.reward_init), ("--reward-from", cfg.reward_from)):
        if given and not cfg.resume and Path(given).expanduser().resolve().is_relative_to(folder.resolve()):
            raise RunError(f"{option} {given} lies in --out {folder}, which a fresh run clears; choose another --out")
    check_reusable(folder, cfg)
    if cfg.resume and not (folder / "checkpoint.json").exists():
        raise RunError(f"--resume: no checkpoint in {folder}")
    if cfg.resume and (folder / "summary.json").exists():  # resuming would only repeat its final evaluation
        raise RunError(f"--resume: {folder} holds a finished run, nothing to continue (minirl rerank --run {folder} "
                       "uses it; --overwrite trains it again)")


def check_output(path: Path, option: str, folder: bool = False, inputs: dict[str, str | None] | None = None) -> None:
    """Refuse, before any work, an output that cannot be written: a file's folder must exist; a run folder is
    created with its parents, so the nearest existing one must be a folder. (Permissions show when writing.)
    `inputs` (option -> path) are what the command reads: the output may be none of them, nor a run's own file."""
    for name, given in (inputs or {}).items():
        if given:
            check_not_input(path, option, name, Path(given))
    if path.exists() and path.is_dir() != folder:
        raise RunError(f"{option} {path}: {'not a folder' if folder else 'is a folder, not a file'}")
    existing = path if folder else path.parent
    while folder and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        raise RunError(f"{option} {path}: no such folder {existing}")
    if not existing.is_dir():
        raise RunError(f"{option} {path}: {existing} is not a folder")


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "eval_samples.jsonl", "checkpoint.json", "pool.jsonl",
             "policy", "reward", "README.md")  # what an output written into a run folder may not replace


def check_not_input(path: Path, option: str, name: str, given: Path) -> None:
    """Writing `path` must not destroy `given`: the same file, or a file of the run folder `given`."""
    target, source = path.resolve(), given.resolve()
    if target == source or (target.is_file() and source.is_file() and os.path.samefile(target, source)):  # hard link
        raise RunError(f"{option} {path} is also {name}: writing it would destroy it; choose another file")
    if source.is_dir() and target.is_relative_to(source):
        first = target.relative_to(source).parts[0]
        if first in RUN_FILES or first.startswith("checkpoint-"):
            raise RunError(f"{option} {path} is a file of the run {given} ({name}); choose another name")


LOCK = ".lock"  # the pid of the process training in the folder; a dotfile, so a folder holding only it is empty


def running_pid(folder: Path) -> int | None:
    """The pid of another live process training in `folder`, None when there is none (or it died: a stale lock)."""
    if (folder / LOCK).is_dir():
        raise RunError(f"{folder / LOCK} is a folder, not minirl's lock file: remove it")
    try:
        pid = int((folder / LOCK).read_text())
    except (OSError, ValueError):  # unreadable or not a number: no process holds it
        return None
    if pid <= 0 or pid == os.getpid():  # 0 and -1 would ask about process groups, not one process
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # gone, or no pid at all
        return None
    except PermissionError:  # it exists, under another user
        pass
    return pid


def check_not_running(folder: Path) -> None:
    if (pid := running_pid(folder)) is not None:
        raise RunError(f"{folder} is being trained by another process (pid {pid}); wait for it to end or choose "
                       f"another --out (if pid {pid} is no minirl run, delete {folder / LOCK})")


def lock(folder: Path) -> None:
    """Claim `folder` for this process (a stale lock of a dead process is taken over)."""
    try:
        fd = os.open(folder / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        check_not_running(folder)  # another live process won the race: one line; a dead one's lock: replaced
        (folder / LOCK).unlink(missing_ok=True)
        return lock(folder)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))


def unlock(folder: Path) -> None:
    try:
        if int((folder / LOCK).read_text()) == os.getpid():
            (folder / LOCK).unlink()
    except (OSError, ValueError):
        pass


def last_checkpoint(folder: Path) -> int | None:
    """The step of the checkpoint in force in `folder`, None when there is none."""
    try:
        return json.loads((folder / "checkpoint.json").read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None

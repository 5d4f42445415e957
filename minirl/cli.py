"""The command line: `minirl train | rerank | inspect | plot` (Typer).

`train`'s options are generated from the fields of `TrainConfig` (minirl.config), so the
help text lives in one place: --help shows TrainConfig's defaults, the tiny preset's values
where they differ, and the allowed values of each choice; an option left out takes the
preset's value (`--print-config` shows the result). Mistakes a user can make print one red
line: exit code 2 for a usage error (an option out of range, an unknown value, options that
do not go together), 1 for a bad file, bad data or a run that diverged. Ctrl-C during
`train` says where --resume continues and exits 130.
"""

from __future__ import annotations

import inspect
import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import Field, asdict, fields
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from minirl.config import (
    CHOICES,
    PRESETS,
    TrainConfig,
    UsageError,
    UserError,
    base_policy,
    check,
    config_from,
    default_out,
    from_preset,
    reward_backbone,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial inverse RL for LLM reasoning: learn a dense reward from expert "
                       "demonstrations, train a policy with PPO on it, rerank and inspect with it.")
err = Console(stderr=True, soft_wrap=True)
TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user's mistake into one readable line, exit code 2 for a usage error and 1 for the rest; bugs
    still raise."""
    try:
        yield
    except (UserError, OSError) as e:  # OSError: a file the user named cannot be read or written
        err.print(f"[bold red]error:[/] {escape(str(e))}")  # escaped: "pip install '.[plot]'" is no style tag
        raise typer.Exit(2 if isinstance(e, UsageError) else 1) from None
    except KeyboardInterrupt:  # Ctrl-C in rerank or inspect: nothing to continue from, so one word suffices
        err.print("interrupted")
        raise typer.Exit(130) from None


def train(ctx: typer.Context, print_config: bool, **options) -> None:
    from minirl.train import train as run_training

    # only the options given on the command line override the preset; by name, as newer typers vendor click
    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
    with user_errors():
        cfg = check(from_preset(given.pop("preset", "tiny"), given.pop("algo", "airl"), **given))
        if print_config:
            typer.echo(json.dumps(asdict(cfg), indent=2))
            return
        try:
            run_training(cfg)
        except KeyboardInterrupt:  # Ctrl-C: where the run can be continued from, not a traceback
            err.print(where_to_continue(cfg))
            raise typer.Exit(130) from None
    print_next_commands(cfg)


def where_to_continue(cfg: TrainConfig) -> str:
    """What Ctrl-C leaves: the run's last checkpoint, or that of the base model it was pretraining first."""
    from minirl.folders import last_checkpoint

    if (step := last_checkpoint(Path(cfg.out) if cfg.out else default_out(cfg))) is not None:
        return f"interrupted at step {step}; --resume continues"
    for pretrained in (base_policy(cfg), reward_backbone(cfg)):
        if pretrained is not None and (step := last_checkpoint(Path(pretrained.out))) is not None:
            return f"interrupted while pretraining {pretrained.out} (step {step}); the same command continues it"
    return "interrupted before the first checkpoint; nothing to resume"


def print_next_commands(cfg: TrainConfig) -> None:
    """What a user can run on the run just trained."""
    folder = shlex.quote(str(Path(cfg.out) if cfg.out else default_out(cfg)))
    typer.echo(f"next, with this run:\n  minirl rerank --run {folder}     # best-of-N on held-out questions\n"
               f"  minirl inspect --run {folder}    # a trace, coloured token by token\n"
               f"  minirl plot {folder}             # its training curves")


def train_option(f: Field) -> typer.models.OptionInfo:
    """`train`'s --option for one TrainConfig field: its help line, TrainConfig's default, the tiny preset's value
    where it differs, and the allowed values of a choice."""
    help, metavar, choices = f.metadata["help"] + tiny_note(f.name, f.default), None, CHOICES.get(f.name)
    if choices:
        metavar = "[" + "|".join(c for c in choices if c) + "]"
    if choices and len(metavar) > 30:  # too wide for the metavar column: listed in the help line instead
        help, metavar = help + f" (one of: {', '.join(c for c in choices if c)})", "NAME"
    return typer.Option(f.default, *flag_names(f), help=escape(help), metavar=metavar,
                        show_default="empty" if f.default == "" else True)


def flag_names(f: Field) -> tuple[str, ...]:
    """A switch that is off by default and in every preset is a plain --flag (no --no-flag column in --help)."""
    if f.type != "bool" or f.default or any(p.get(f.name) for algos in PRESETS.values() for p in algos.values()):
        return ()
    return (f"--{f.name.replace('_', '-')}",)


def tiny_note(name: str, default) -> str:
    """' [tiny: pretrain 600, sft 200, airl/outcome 100]': the tiny preset's values of a field, by algo, where
    they differ from TrainConfig's default ("" when none does)."""
    by_value: dict = {}
    for algo in CHOICES["algo"]:
        value = {**PRESETS["tiny"].get("*", {}), **PRESETS["tiny"].get(algo, {})}.get(name, default)
        if value != default:
            by_value.setdefault(value, []).append(algo)
    if not by_value:
        return ""
    return " [tiny: " + ", ".join(f"{'/'.join(algos)} {value}" for value, algos in by_value.items()) + "]"


train.__signature__ = inspect.Signature([  # one --option per TrainConfig field (train_option), then --print-config
    inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    *(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=TYPES[str(f.type)],
                        default=train_option(f)) for f in fields(TrainConfig)),
    inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--print-config", help="print the resolved settings (preset, then options) as JSON and exit"))])
app.command(help="Train a policy (pretrain | sft | airl, the default | outcome) or a reward model alone on a pool "
                 "of the policy's samples (reward). On the tiny CPU preset "
                 "the base policy is built first when missing. An option not given takes the preset's value.")(train)


AUROC_INTERVALS = ("mean", "f-logpi", "logprob")  # the scores `rerank` gives AUROC intervals for


@app.command(help="Rerank N sampled solutions per question with a trained reward model (best-of-N, M5).")
def rerank(
    run: str = typer.Option(..., help="run folder whose policy samples the solutions"),
    reward_from: str = typer.Option("", help="take the reward model from this run instead (same tokenizer)"),
    n: int = typer.Option(16, help="samples per question (N)"),
    questions: int = typer.Option(200, help="held-out questions to rerank"),
    data: str = typer.Option("", help="questions: a GSM8K .jsonl file; default the run's own held-out set"),
    max_new_tokens: int = typer.Option(0, help="longest sampled response (0 = the run's setting)"),
    seed: int = typer.Option(0, help="sampling seed"),
    out: str = typer.Option("", help="write the figures here as JSON (method -> metric -> value)"),
    samples: str = typer.Option("", help="save the scored samples here (JSON lines) to recompute metrics later"),
    from_samples: str = typer.Option("", help="recompute the figures from saved samples instead of sampling"),
) -> None:
    import time

    from minirl import folders, tables
    from minirl.rerank import load_records, rerank_table, sample_records, save_records
    from minirl.reward import run_default_score

    with user_errors():
        inputs = {**run_inputs(run), "--reward-from": reward_from, "--data": data, "--from-samples": from_samples}
        check_rerank_options(n, questions, max_new_tokens, seed, {"--out": out, "--samples": samples}, inputs)
        started = time.time()
        if from_samples:
            if not Path(run).is_dir():  # read for the run's default score only, yet named: it must exist
                raise folders.RunError(f"--run {run}: no such run folder")
            default_score = run_default_score(run, reward_from)  # a broken config.json: said before any work
            records = load_records(from_samples)
        else:
            records = sample_records(run, reward_from, data, questions, n, max_new_tokens, seed)
            default_score = run_default_score(run, reward_from)
            if samples:
                save_records(records, samples)
        n_min = min(len(r["samples"]) for r in records)
        ks = tuple(k for k in (1, 4, 8, 16, 32) if k <= n_min)
        figures = rerank_table(records, ks, auroc_intervals=AUROC_INTERVALS)
        title = f"success@k|{n_min} on {len(records)} questions ({time.time() - started:.0f} s)"
        Console().print(tables.rerank_table_view(figures, ks, title))
        for line in tables.auroc_interval_lines(figures, AUROC_INTERVALS):
            Console().print(line, markup=False)
        Console().print(f"minirl.reward.score ranks by row: {default_score}", markup=False)
        if out:
            with open(out, "w") as f:
                json.dump(figures, f, indent=2)


def run_inputs(run: str) -> dict[str, str]:
    """What a command on `run` reads: the folder, and the data files its config.json names (outputs spare them)."""
    from minirl.folders import read_json_object

    saved = read_json_object(Path(run) / "config.json") or {}
    files = {f"--run's --{key.replace('_', '-')}": saved.get(key) for key in ("data", "test_data")}
    return {"--run": run, **{name: path for name, path in files.items() if isinstance(path, str)}}


def check_rerank_options(n: int, questions: int, max_new_tokens: int, seed: int, outputs: dict[str, str],
                         inputs: dict[str, str]) -> None:
    """Refuse, before any sampling, options out of range (usage errors) and outputs that cannot be written or
    would overwrite an input (option -> path, "" when not given)."""
    from minirl import folders

    for name, value, lowest in (("n", n, 1), ("questions", questions, 1), ("max-new-tokens", max_new_tokens, 0),
                                ("seed", seed, 0)):
        check_range(name, value, lowest)
    if n > 1024:  # the paper samples 16; a typo's extra zeros would sit in sampling, or fill the memory, for hours
        raise UsageError(f"--n {n}: at most 1024 samples per question")
    if outputs["--out"] and outputs["--out"] == outputs["--samples"]:
        raise UsageError(f"--out and --samples are both {outputs['--out']}: give two files")
    for option, path in outputs.items():
        if path:
            folders.check_output(Path(path), option, inputs=inputs)


def check_range(name: str, value: int | None, lowest: int) -> None:
    """A rerank/inspect option below `lowest` (or a seed past 2^32 - 1) is a usage error; None: not given."""
    if value is None:
        return
    if value < lowest:
        raise UsageError(f"--{name} {value}: " + (f"must be at least {lowest}" if lowest else "must not be negative"))
    if name == "seed" and value >= 2**32:
        raise UsageError(f"--seed {value}: must be below 2^32")


@app.command(name="inspect", help="Show the per-token reward of a trace in colour, and measure error localisation.")
def inspect_run(  # not `inspect`: that name is the standard library's module, used above
    run: str = typer.Option(..., metavar="PATH", help="a run folder (policy/, reward/, config.json)"),
    reward_from: str | None = typer.Option(None, metavar="PATH",
                                           help="take the reward model from this other run folder"),
    question: int | None = typer.Option(None, help="index into the run's held-out test set (default 0)"),
    text: str | None = typer.Option(None, help="a question given as text instead of --question"),
    trace: str | None = typer.Option(None, help="a response to score instead of sampling one"),
    trace_file: str | None = typer.Option(None, metavar="PATH",
                                          help="a file holding the response to score instead of sampling one"),
    perturb_kind: str | None = typer.Option(None, "--perturb", metavar="KIND",
                                            help="show the expert trace and a copy changed by one rule (M3): result, "
                                                 "operator, final or numbers; the true change is marked"),
    localisation: int | None = typer.Option(None, metavar="N",
                                            help="measure Hit@1/Hit@3 over N perturbed held-out expert traces and the "
                                                 "policy's wrong samples of N held-out questions (M7)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object on stdout"),
    seed: int = typer.Option(0, help="seed for sampling and for choosing perturbations"),
    max_new_tokens: int | None = typer.Option(None, help="longest sampled response (default: the run's, else 96)"),
    html: str | None = typer.Option(None, metavar="FILE", help="also save the per-token view as HTML, to share it"),
    palette: str = typer.Option("blue-orange", help="token colours: blue-orange (colour-blind safe) or red-green"),
) -> None:
    from minirl import localise, runs, tables

    with user_errors():
        inputs = {**run_inputs(run), "--reward-from": reward_from, "--trace-file": trace_file}  # --html: none
        response = read_response(trace, trace_file, perturb_kind, localisation, max_new_tokens, seed, html, palette,
                                 text, question, inputs)
        policy, tokenizer, reward_model, config = runs.load_run(run, reward_from)
        cfg = config_from(config, f"{run}/config.json")
        head = reward_model.head_kind if reward_model is not None else None
        max_new = max_new_tokens or config.get("max_new_tokens") or 96
        if reward_model is None:
            err.print(f"[yellow]note:[/] {run} has no reward model (no reward/): showing the policy's log-prob instead")
        test = held_out_tasks(run, config) if localisation is not None or text is None else []
        if localisation is not None and localisation > len(test):
            raise UsageError(f"--localisation {localisation}: the held-out set has {len(test)} problems")
        if localisation is not None:  # Hit@1 / Hit@3 in two settings (M7)
            figures = {"run": run, "head": head, **localise.localisation(
                policy, tokenizer, reward_model, test, localisation, max_new, seed, cfg.data == "synthetic")}
            tables.print_localisation(figures, as_json)
            return
        where, question_text, gold = pick_question(test, question or 0, text)
        traces = localise.score_traces(policy, tokenizer, reward_model, question_text, localise.traces_to_show(
            policy, tokenizer, cfg, question_text, gold, response, perturb_kind, seed, max_new))
        tables.print_question(where, question_text, gold, head, localise.SHOWN[head], traces, as_json, html,
                              palette)


def read_response(trace: str | None, trace_file: str | None, perturb_kind: str | None, localisation: int | None,
                  max_new_tokens: int | None, seed: int, html: str | None = None,
                  palette: str = "blue-orange", text: str | None = None, question: int | None = None,
                  inputs: dict[str, str | None] | None = None) -> str | None:
    """Check `inspect`'s options (usage errors); the response to score (--trace or --trace-file), if any."""
    from minirl import folders
    from minirl.data import DataError
    from minirl.perturb import PERTURBATIONS
    from minirl.viz import PALETTES

    if palette not in PALETTES:
        raise UsageError(f"--palette {palette!r}: choose from {', '.join(PALETTES)}")
    if html is not None and localisation is not None:
        raise UsageError("--html saves the per-token view; --localisation prints tables (use --json to keep them)")
    if localisation is not None and (given := [o for o, v in (("--text", text), ("--trace", trace), ("--trace-file",
                                     trace_file), ("--perturb", perturb_kind)) if v is not None]):
        raise UsageError(f"--localisation measures over held-out problems; {given[0]} shows one trace: give one")
    if text is not None and question is not None:
        raise UsageError("give --question or --text, not both")
    for option, given in (("--text", text), ("--trace", trace)):
        if given is not None and not given.strip():
            raise UsageError(f"{option} is empty")
    if html is not None:
        folders.check_output(Path(html), "--html", inputs=inputs)
    if perturb_kind is not None and perturb_kind not in PERTURBATIONS:
        raise UsageError(f"--perturb {perturb_kind!r}: unknown; choose from {', '.join(PERTURBATIONS)}")
    if trace is not None and trace_file is not None:
        raise UsageError("give --trace or --trace-file, not both")
    check_range("localisation", localisation, 1)
    check_range("max-new-tokens", max_new_tokens, 1)
    check_range("seed", seed, 0)
    if trace_file is None:
        return trace
    if not Path(trace_file).is_file():
        raise DataError(f"--trace-file {trace_file}: no such file")
    try:
        response = Path(trace_file).read_text(encoding="utf-8").rstrip("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"--trace-file {trace_file}: not UTF-8 text (byte {e.start})") from None
    if not response.strip():
        raise DataError(f"--trace-file {trace_file}: empty")
    return response


def held_out_tasks(run: str, config: dict) -> list[dict]:
    """The held-out problems of the run whose saved settings are `config`."""
    from minirl.data import DataError, load_tasks

    if not config:
        raise DataError(f"{run}: no config.json, so its held-out data is unknown; give --text instead")
    return load_tasks(config_from(config, f"{run}/config.json"))["test"]


def pick_question(test: list[dict], index: int, text: str | None) -> tuple[str, str, str | None]:
    """(where it comes from, question, expert answer or None): --text when given, else held-out question `index`."""
    if text is not None:
        return "your question", text, None
    if not 0 <= index < len(test):
        raise UsageError(f"--question {index}: out of range 0..{len(test) - 1} (the held-out set)")
    return f"held-out question {index}", test[index]["question"], test[index]["answer"]


@app.command(help="Draw the training curves of one or more runs (overlaid) and their final score histograms as a "
                  "PNG; needs matplotlib (the plot extra).")
def plot(
    runs: list[str] = typer.Argument(..., metavar="RUN", help="run folders (each with a metrics.jsonl)"),
    out: str = typer.Option("", help="the figure to write, .png, .pdf or .svg (default: RUN/curves.png for one "
                                     "run, else curves.png)"),
) -> None:
    from minirl.plot import plot_runs

    with user_errors():
        Console().print(f"figure: {plot_runs(runs, out or None)}", markup=False)

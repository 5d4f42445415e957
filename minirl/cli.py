"""The command line: `minirl train | rerank | inspect` (Typer).

`train`'s options are generated from the fields of `TrainConfig` (minirl.config), so the
help text lives in one place; an option left out takes the preset's value. Mistakes a
user can make (bad path, bad data, unknown option value) print one red line and exit 1.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Optional

import typer
from rich.console import Console

from minirl.config import TrainConfig, UserError, config_from, from_preset

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adversarial inverse RL for LLM reasoning: learn a dense reward from expert "
                       "demonstrations, train a policy with PPO on it, rerank and inspect with it.")
err = Console(stderr=True, soft_wrap=True)
TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user's mistake into one readable line and exit code 1; bugs still raise."""
    try:
        yield
    except (UserError, OSError) as e:  # OSError: a file the user named cannot be read or written
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from None


def train(**options) -> None:
    from minirl.train import train as run_training

    with user_errors():
        cfg = from_preset(options.pop("preset") or "tiny", options.pop("algo") or "airl", **options)
        run_training(cfg)


train.__signature__ = inspect.Signature([  # one --option per TrainConfig field, its help from the field
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[TYPES[str(f.type)]],  # noqa: UP045
                      default=typer.Option(None, help=f.metadata["help"]))
    for f in fields(TrainConfig)])
app.command(help="Train a policy: pretrain | sft | airl (default) | outcome. On the tiny CPU preset "
                 "the base policy is built first when missing.")(train)


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
    import json
    import time

    import torch
    from rich.table import Table

    from minirl import runs
    from minirl.data import load_gsm8k
    from minirl.rerank import load_records, rerank_table, sample_and_score, save_records

    with user_errors():
        started = time.time()
        if from_samples:
            records = load_records(from_samples)
        else:
            policy, tokenizer, reward_model, config = runs.load_run(run, reward_from or None)
            if reward_model is None:
                err.print("[yellow]no reward model in this run: only the baselines are shown[/]")
            cfg = config_from(config)
            tasks = load_gsm8k(data) if data else runs.load_data(cfg)["test"]
            torch.manual_seed(seed)
            records = sample_and_score(policy, tokenizer, tasks[:questions], n, max_new_tokens or cfg.max_new_tokens,
                                       reward_model, cfg.temperature, cfg.top_p)
            if samples:
                save_records(records, samples)
        n_min = min(len(r["samples"]) for r in records)
        ks = tuple(k for k in (1, 4, 8, 16, 32) if k <= n_min)
        with_ci = ("mean", "f-logpi", "logprob")
        figures = rerank_table(records, ks, auroc_intervals=with_ci)
        table = Table(title=f"success@k|{n_min} on {len(records)} questions ({time.time() - started:.0f} s)")
        table.add_column("method")
        for k in ks:
            table.add_column(f"@{k}", justify="right")
        table.add_column("AUROC within q", justify="right")
        table.add_column("AUROC pooled", justify="right")
        for method, row in figures.items():
            if method == "pass@k":
                continue
            cells = [f"{row[f'success@{k}']:.3f}" if f"success@{k}" in row else "" for k in ks]
            aurocs = [f"{row[key]:.3f}" if key in row else "" for key in ("auroc", "auroc_pooled")]
            table.add_row(method, *cells, *aurocs)
        table.add_row("pass@k", *[f"{figures['pass@k'][f'pass@{k}']:.3f}" for k in ks], "", "")
        Console().print(table)
        for method in with_ci:
            if "auroc_ci" in figures.get(method, {}):
                row = figures[method]
                (a, b), (c, d) = row["auroc_ci"], row["auroc_pooled_ci"]
                Console().print(f"{method}: AUROC within question {row['auroc']:.3f} [{a:.3f}, {b:.3f}], pooled "
                                f"{row['auroc_pooled']:.3f} [{c:.3f}, {d:.3f}] (95 % bootstrap over questions)")
        if out:
            with open(out, "w") as f:
                json.dump(figures, f, indent=2)


@app.command(help="Show the per-token reward of a trace in colour, and measure error localisation.")
def inspect(
    run: str = typer.Option(..., "--run", metavar="PATH", help="a run folder (policy/, reward/, config.json)"),
    reward_from: str | None = typer.Option(None, "--reward-from", metavar="PATH",
                                           help="take the reward model from this other run folder"),
    question: int = typer.Option(0, "--question", help="index into the run's held-out test set"),
    text: str | None = typer.Option(None, "--text", help="a question given as text instead of --question"),
    trace: str | None = typer.Option(None, "--trace", help="a response to score instead of sampling one"),
    trace_file: str | None = typer.Option(None, "--trace-file", metavar="PATH",
                                          help="a file holding the response to score instead of sampling one"),
    perturb_kind: str | None = typer.Option(None, "--perturb", metavar="KIND",
                                            help="show the expert trace and a copy changed by one rule (M3): result, "
                                                 "operator, final or numbers; the true change is marked"),
    localisation: int | None = typer.Option(None, "--localisation", metavar="N",
                                            help="measure Hit@1/Hit@3 over N perturbed held-out expert traces and the "
                                                 "policy's wrong samples of N held-out questions (M7)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object on stdout"),
    seed: int = typer.Option(0, "--seed", help="seed for sampling and for choosing perturbations"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens",
                                              help="longest sampled response (default: the run's, else 96)"),
) -> None:
    import json
    import random
    from pathlib import Path

    import torch
    from rich.table import Table
    from rich.text import Text

    from minirl import localise, runs, viz
    from minirl.data import PERTURBATIONS, DataError, format_prompt, is_correct
    from minirl.data import perturb as apply_perturbation
    from minirl.rerank import score_texts
    from minirl.rollout import sample

    out = Console()
    with user_errors():
        if perturb_kind is not None and perturb_kind not in PERTURBATIONS:
            raise DataError(f"--perturb {perturb_kind!r}: unknown; choose from {', '.join(PERTURBATIONS)}")
        if trace is not None and trace_file is not None:
            raise DataError("give --trace or --trace-file, not both")
        if localisation is not None and localisation < 1:
            raise DataError("--localisation N needs N >= 1")
        if trace_file is not None and not Path(trace_file).is_file():
            raise DataError(f"--trace-file {trace_file}: no such file")
        response = Path(trace_file).read_text(encoding="utf-8").rstrip("\n") if trace_file is not None else trace
        policy, tokenizer, reward_model, config = runs.load_run(run, reward_from)
        cfg = config_from(config)
        max_new = max_new_tokens or config.get("max_new_tokens") or 96
        head = reward_model.head_kind if reward_model is not None else None
        what = {"token": "reward f - log pi per token", "scalar": "reward z per token"}.get(
            head, "policy log-prob log pi per token")
        if reward_model is None:
            err.print(f"[yellow]note:[/] {run} has no reward model (no reward/): showing the policy's log-prob instead",
                      soft_wrap=True)
        data: dict[str, list[dict]] = {"test": []}
        if localisation is not None or text is None:
            if not config:
                raise DataError(f"{run}: no config.json, so its held-out data is unknown; give --text instead")
            data = runs.load_data(cfg)
        test = data["test"]

        if localisation is not None:  # ---- Hit@1 / Hit@3 in two settings (M7)
            own_samples = cfg.data == "synthetic"
            figures = {"run": run, "head": head, **localise.localisation(
                policy, tokenizer, reward_model, test, localisation, max_new, seed, own_samples)}
            if as_json:
                typer.echo(json.dumps(figures))
                return
            perturbed, samples = figures["perturbed"], figures["samples"]
            settings = [(f"{perturbed['n']} perturbed held-out expert traces; target: the first change", perturbed),
                        (f"{samples['n']} wrong samples of {samples['sampled']} held-out questions; target: the "
                         "first wrong line" if samples else "", samples)]
            for title, figs in settings:
                if figs is None:
                    out.print("(no own-sample setting: GSM8K has no deterministic right solution to compare with)")
                    continue
                table = Table(title=f"error localisation ({run}, {f'{head} head' if head else 'no reward model'}): "
                                    f"{title}",
                              caption="lowest: the lowest-scoring token; first < tau: the first token below tau, tau "
                                      "chosen on the other half of the traces (two folds: tau of each shown). The "
                                      "final EOS is never a candidate.")
                for column in ("score", "rule", "Hit@1 [95% CI]", "Hit@3", "Step@1"):
                    table.add_column(column, justify="left" if column in ("score", "rule") else "right")
                for label, key in [("reward f", "reward"), ("reward f - log pi", "reward_minus_logprob"),
                                   ("policy log-prob", "policy_logprob"), ("chance", "chance")]:
                    taus = [t for t in figs["thresholds"].get(key, []) if t is not None]
                    rules = [("lowest", key)] + ([(f"first < {'/'.join(f'{t:.1f}' for t in taus)}", f"{key}_first")]
                                                 if taus else [])
                    for rule, name in rules if key != "chance" else [("uniform", key)]:
                        if name in figs["hit@1"]:  # the reward rows only with a reward model
                            lo, hi = figs["hit@1_ci"][name]
                            cells = [f"{v:.2f}" if v is not None else "-" for v in
                                     (figs["hit@1"][name], figs["hit@3"][name], figs["step@1"][name])]
                            cells[0] += f" [{lo:.2f}, {hi:.2f}]" if figs["n"] else ""
                            table.add_row(label, rule, *cells)
                out.print(table)
                for rule, (gain, lo, hi) in figs["hit@1_gain_over_logprob"].items():
                    out.print(f"Hit@1 gain of reward f over log-prob, paired "
                              f"({'first < tau' if rule.endswith('_first') else 'lowest'}): {gain:+.2f} "
                              f"[{lo:+.2f}, {hi:+.2f}]")
            first = "reward" if reward_model is not None else "policy_logprob"
            for rule in (first, f"{first}_first"):
                out.print(f"hit@1 of {rule} by perturbation: " + ", ".join(
                    f"{kind} {v[rule]:.2f} (n={v['n']})" for kind, v in perturbed["by_kind"].items() if rule in v))
            return

        # ---- one question: its trace(s) coloured per token
        if text is not None:
            where, question_text, gold = "your question", text, None
        else:
            if not 0 <= question < len(test):
                raise DataError(f"--question {question}: out of range 0..{len(test) - 1} (the held-out set)")
            where = f"held-out question {question}"
            question_text, gold = test[question]["question"], test[question]["answer"]
        marks: list[tuple[int, int] | None] = []  # character spans to mark, one per trace
        if perturb_kind is not None:
            clean = response if response is not None else gold
            if clean is None:
                raise DataError("--perturb needs an expert trace: give --question (or --trace) with it")
            got = apply_perturbation(clean, random.Random(seed), perturb_kind)
            if got is None:
                raise DataError(f"--perturb {perturb_kind}: the rule does not apply to this trace; try another")
            responses, marks = [clean, got[0]], [None, got[1]]
            labels = ["expert trace" if response is None else "given trace", f"perturbed ({perturb_kind})"]
        else:
            if response is None:
                torch.manual_seed(seed)
                batch = sample(policy, tokenizer, [format_prompt(question_text, tokenizer)], max_new, cfg.temperature,
                               cfg.top_p)
                response = batch.texts(tokenizer)[0]
            responses, labels = [response], ["given trace" if trace is not None or trace_file else "sampled trace"]
            wrong = gold is not None and not is_correct(response, gold)
            marks = [localise.first_wrong_line_span(response, gold) if wrong and cfg.data == "synthetic" else None]
        results = score_texts(policy, tokenizer, [question_text] * len(responses), responses, reward_model)
        values = [localise.display_rewards(r, head) if head else r["logprobs"] for r in results]
        token_marks = [localise.char_to_token_span(r["tokens"], m) if m and "".join(r["tokens"][:-1]) == x else None
                       for r, m, x in zip(results, marks, responses, strict=True)]
        if as_json:
            typer.echo(json.dumps({"question": question_text, "head": head, "scores": what, "traces": [
                {"label": label, "text": x, "tokens": r["tokens"], "scores": v, "mark": m}
                for label, x, r, v, m in zip(labels, responses, results, values, token_marks, strict=True)]}))
            return
        out.print(Text.assemble((f"{where}: ", "bold"), question_text))
        scale = max((abs(v) for vs in values for v in vs), default=0.0) or 1.0  # one colour scale for all traces
        for label, x, r, v, m, mark in zip(labels, responses, results, values, token_marks, marks, strict=True):
            head_name = f"{head} head" if head else "no reward model"
            viz.print_trace(r["tokens"], v, out, title=f"{label} · {where} · {head_name}: {what}", mark=m, scale=scale)
            if gold is not None and perturb_kind is None:
                expected = gold.split("####")[-1].strip()
                out.print(f"answer {'right' if is_correct(x, gold) else 'wrong'} (expected {expected})"
                          + ("; marked: the first line that differs from the right solution" if m else ""),
                          soft_wrap=True)
            if m is None and mark is not None:
                out.print("(the change cannot be marked: these tokens, decoded one by one, do not spell the text)")
            if m is not None and len(r["tokens"]) > 1:
                hit = localise.hit_at_k(v, m, 1)
                out.print(f"lowest non-EOS token inside the marked span: {'yes' if hit else 'no'}")

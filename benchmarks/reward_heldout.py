"""Held-out figures of a finished `minirl train --algo reward` run, recomputed from its saved reward model.

    python benchmarks/reward_heldout.py runs/smollm2-reward [--out runs/smollm2-reward/heldout.json]
    python benchmarks/reward_heldout.py runs/smollm2-reward --validation 200

Reads the run's settings, its policy/ and reward/ folders and the held-out answers of its sample pool (pool.jsonl),
rebuilds the held-out traces exactly as training did (the same problems, the same perturbations), caches their
features and prints `fit_reward.heldout_figures` with 95 % bootstrap intervals (the table `minirl train` prints at
the end), then the same figures for each kind of perturbation alone, and where each perturbed copy's lowest token
lies (in its first change, on a later change, after it, before it). Use it after changing how the figures are
computed, or to look again without retraining. Sampling is never repeated: only the pool's answers are scored.
~3 minutes for SmolLM2 on 2 cores (100 problems).

`--validation N` scores N training problems that the run never saw (those after its demonstrations) instead of the
test problems, each expert solution beside one perturbed copy (no pooled answers there, so no expert-over-wrong
figure): where to choose a trace score (`fit_reward.TRACE_SCORES`) without looking at the test problems.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from minirl import folders, runs
from minirl.airl import differing_runs
from minirl.cli import user_errors
from minirl.config import TrainConfig, UsageError, config_from
from minirl.data import DataError, load_tasks
from minirl.fit_reward import TRACE_SCORES, heldout_figures, trace_scores
from minirl.pool import pooled, read_pool
from minirl.tables import fit_table
from minirl.traces import Trace, cache_features, frozen_part, make_traces, top_layers


def main(run: Path = typer.Argument(..., help="a finished `--algo reward` run folder"),
         out: Path = typer.Option(None, help="also write the figures here as JSON"),
         validation: int = typer.Option(0, min=0, help="score this many unseen training problems instead of the test "
                                                "problems (0: the test problems, as training did)")) -> None:
    with user_errors():  # a wrong folder or an unreadable file: one line, not a traceback
        report(run, out, validation)


def report(run: Path, out: Path | None, validation: int) -> None:
    """Score the run's held-out traces (or `validation` unseen training problems), print both tables, save JSON."""
    if out and not out.parent.is_dir():  # before minutes of scoring, not after
        raise UsageError(f"--out {out}: there is no folder {out.parent}")
    cfg = config_from(folders.saved_config(run), f"{run}/config.json")
    policy, tokenizer, reward_model, _ = runs.load_run(run)
    data = load_tasks(cfg)
    if validation and len(data["corpus"]) <= cfg.n_demos:
        raise UsageError(f"--validation {validation}: all {len(data['corpus'])} training problems are "
                         "demonstrations, none unseen")
    if reward_model is None:
        raise DataError(f"{run}: no reward model in this run (no reward/ inside); give a finished `--algo reward` run")
    if validation:  # problems after the demonstrations: `--algo reward` never reads them
        heldout = make_traces(tokenizer, data["rl"][:validation], [], random.Random(cfg.seed + 2))
    else:
        test = data["test"][: cfg.eval_questions]
        answers = pooled(read_pool(run / "pool.jsonl"), cfg, "test", len(test))
        heldout = make_traces(tokenizer, test, answers, random.Random(cfg.seed + 1))  # as fit_reward builds them
    (k, backbone), pad_id = frozen_part(cfg, reward_model), tokenizer.pad_token_id
    cache_features(policy, heldout, k, pad_id, max(cfg.micro_batch_size, 8), cfg.precision, backbone)
    top = top_layers(reward_model.lm, k)
    scores = trace_scores(cfg, reward_model, top, heldout, pad_id)
    figures = heldout_figures(cfg, reward_model, top, heldout, pad_id, intervals=True, scores=scores)
    where = f"{validation} unseen training problems" if validation else "held-out figures"
    console = Console() if sys.stdout.isatty() else Console(width=140)  # a log file: no wrapping at 80 columns
    console.print(fit_table(figures, f"{where} · {run}", TRACE_SCORES))
    figures["by_kind"] = by_kind(cfg, heldout, scores)
    console.print(kind_table(figures["by_kind"]))
    figures["where_lowest"] = where_lowest(heldout, scores)
    console.print(where_table(figures["where_lowest"]))
    if out:
        out.write_text(json.dumps(runs.finite_or_none(figures), indent=2))


def by_kind(cfg: TrainConfig, traces: list[Trace], scores: list[dict]) -> dict[str, dict]:
    """The same figures for each kind of perturbation alone: its perturbed copies beside their own experts."""
    kinds: dict[str, set[int]] = {}
    for t in traces:
        if t.source == "perturbed":
            kinds.setdefault(t.kind, set()).add(t.question)
    result = {}
    for kind, questions in sorted(kinds.items()):
        rows = [(t, s) for t, s in zip(traces, scores) if t.question in questions and t.source != "policy"]
        figures = heldout_figures(cfg, None, None, [t for t, _ in rows], 0, scores=[s for _, s in rows])
        result[kind] = {"copies": len(questions), **figures}
    return result


def kind_table(kinds: dict[str, dict]) -> Table:
    """`by_kind` as a table: each figure for the D logit, the policy's log-prob in brackets."""
    table = Table(title="by kind of perturbation: D logit (policy log-prob)")
    for name in ("kind", "copies", *(f"AUROC {how}" for how in ("mean", "low5")), "Hit@1", "step Hit@1",
                 "step Hit@1 (line)"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    for kind, f in kinds.items():
        table.add_row(kind, str(f["copies"]), *(f"{f[f'{key}_reward_{how}']:.2f} ({f[f'{key}_logprob_{how}']:.2f})"
                                                for key, how in (("clean_vs_perturbed_auroc", "mean"),
                                                                 ("clean_vs_perturbed_auroc", "low5"),
                                                                 ("hit1", "lowest"), ("step1", "lowest"),
                                                                 ("step1", "line"))))
    return table


PLACES = ("in the first change", "on a later change", "after, unchanged", "before the change")


def where_lowest(traces: list[Trace], scores: list[dict]) -> dict[str, dict[str, int]]:
    """Where each perturbed copy's lowest D-logit token lies, by kind: in its first change (a Hit@1 hit), on a later
    token that differs from its expert's (`numbers` shifts several), on unchanged text after the first change (where
    the error shows, such as a `#### n` line that no longer follows), or before the change (a false alarm)."""
    experts = {t.question: t.response_ids for t in traces if t.source == "expert"}
    counts: dict[str, Counter] = {}
    for t, s in zip(traces, scores):
        if t.source != "perturbed":
            continue
        changed = {j for start, end in differing_runs(t.response_ids, experts[t.question]) for j in range(start, end)}
        i, (start, end) = s["reward_lowest"], t.target
        place = PLACES[0] if start <= i < end else PLACES[3] if i < start else PLACES[1] if i in changed else PLACES[2]
        counts.setdefault(t.kind, Counter())[place] += 1
    return {kind: {place: c[place] for place in PLACES} for kind, c in sorted(counts.items())}


def where_table(where: dict[str, dict[str, int]]) -> Table:
    """`where_lowest` as a table of counts."""
    table = Table(title="where a perturbed copy's lowest D-logit token lies")
    for name in ("kind", *PLACES):
        table.add_column(name, justify="left" if name == "kind" else "right")
    for kind, counts in where.items():
        table.add_row(kind, *(str(counts[place]) for place in PLACES))
    return table


if __name__ == "__main__":
    typer.run(main)

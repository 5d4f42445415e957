"""The tables minirl prints, shared by the CLI and the tutorials: rerank's success@k and AUROCs (M5, M7),
localisation's Hit@k (M7), and a run's summary. Rich tables only; nothing here imports torch."""

from __future__ import annotations

import json
import math

from rich.console import Console, RenderableType
from rich.table import Table

from minirl import viz


def rerank_table_view(figures: dict[str, dict], ks: tuple[int, ...], title: str,
                      labels: dict[str, str] | None = None, ci: bool = False) -> Table:
    """Best-of-N figures of `rerank.rerank_table` (M5, M7): success@k of each method, and the within-question and
    pooled AUROC of its score. `labels` (method -> row name) picks and names the rows, by default every method
    under its own name with pass@k last; `ci` adds the 95 % bootstrap interval of success@1."""
    labels = labels or {method: method for method in [*(m for m in figures if m != "pass@k"), "pass@k"]}
    table = Table(title=title)
    table.add_column("method", no_wrap=True)
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    if ci:
        table.add_column("CI @1", justify="right", no_wrap=True)
    table.add_column("AUROC within q", justify="right")
    table.add_column("AUROC pooled", justify="right")
    for method, label in labels.items():
        row = figures[method]
        success = "pass" if method == "pass@k" else "success"  # pass@k: a right sample among k, the oracle's ceiling
        cells = [_cell(row, f"{success}@{k}") for k in ks]
        if ci:
            cells.append("{:.2f}-{:.2f}".format(*row["success@1_ci"]) if "success@1_ci" in row else "")
        table.add_row(label, *cells, _cell(row, "auroc"), _cell(row, "auroc_pooled"))
    return table


def auroc_interval_lines(figures: dict[str, dict], methods: tuple[str, ...]) -> list[str]:
    """One line per method of `rerank_table(..., auroc_intervals=methods)`: both AUROCs with their intervals.
    Print them with `markup=False`: rich would take an interval such as "[nan, nan]" for a style tag."""
    lines = []
    for method in methods:
        row = figures.get(method, {})
        if "auroc_ci" in row:
            (a, b), (c, d) = row["auroc_ci"], row["auroc_pooled_ci"]
            lines.append(f"{method}: AUROC within question {row['auroc']:.3f} [{a:.3f}, {b:.3f}], pooled "
                         f"{row['auroc_pooled']:.3f} [{c:.3f}, {d:.3f}] (95 % bootstrap over questions)")
    return lines


LOCALISATION_SCORES = {"reward": "reward f", "reward_minus_logprob": "reward f - log pi",
                       "policy_logprob": "policy log-prob", "chance": "chance"}
LOCALISATION_CAPTION = ("lowest: the lowest-scoring token; first < tau: the first token below tau, tau chosen on the "
                        "other half of the traces (two folds: tau of each shown). The final EOS is never a candidate.")


def localisation_table(figures: dict, title: str) -> Table:
    """One setting of `localise.localisation` (M7): Hit@1 [95 % CI], Hit@3 and Step@1 of each score under each rule
    (a `first < tau` row shows the tau of each fold), chance last. Rows the figures lack (no reward model) are left
    out."""
    table = Table(title=title, caption=LOCALISATION_CAPTION)
    for column in ("score", "rule", "Hit@1 [95% CI]", "Hit@3", "Step@1"):
        table.add_column(column, justify="left" if column in ("score", "rule") else "right")
    for key, label in LOCALISATION_SCORES.items():
        for rule, name in _localisation_rules(key, figures["thresholds"].get(key, [])):
            if name not in figures["hit@1"]:
                continue
            cells = [f"{figures[k][name]:.2f}" if figures[k][name] is not None else "-"
                     for k in ("hit@1", "hit@3", "step@1")]
            if figures["n"]:
                cells[0] += " [{:.2f}, {:.2f}]".format(*figures["hit@1_ci"][name])
            table.add_row(label, rule, *cells)
    return table


def print_localisation(figures: dict, as_json: bool) -> None:
    """`minirl inspect --localisation`'s figures as tables (`localisation_report`), or as one JSON line."""
    if as_json:
        print(json.dumps(figures))
        return
    for part in localisation_report(figures):
        Console().print(part, markup=False)  # no markup: an interval "[lo, hi]" is no style tag


def print_question(where: str, question: str, gold: str | None, head: str | None, shown: str, traces: list[dict],
                   as_json: bool, html: str | None = None, palette: str = "blue-orange") -> None:
    """`minirl inspect`'s one-question view: the scored traces in colour (viz.print_traces), or as JSON; and with
    `html` the coloured view in that file. `shown`: what the scores are (`localise.SHOWN[head]`)."""
    what = f"{head + ' head' if head else 'no reward model'}: {shown}"
    expected = gold.split("####")[-1].strip() if gold is not None else None
    if html:
        viz.save_html(html, lambda console: viz.print_traces(traces, where, question, what, console, expected, palette))
        Console(stderr=True).print(f"saved the per-token view to {html}", markup=False)

    if as_json:
        print(json.dumps({"question": question, "head": head, "scores": shown, "traces": [
            {key: t[key] for key in ("label", "text", "tokens", "scores", "mark")} for t in traces]}))
        return
    viz.print_traces(traces, where, question, what, Console(), expected, palette)


def localisation_report(figures: dict) -> list[RenderableType]:
    """What `minirl inspect --localisation` prints of `localise.localisation`'s figures (plus "run" and "head"): a
    table per setting, the paired Hit@1 gain of the reward over log-prob, and Hit@1 by perturbation rule."""
    perturbed, samples = figures["perturbed"], figures["samples"]
    model = f"{figures['head']} head" if figures["head"] else "no reward model"
    settings = [(f"{perturbed['n']} perturbed held-out expert traces; target: the first change", perturbed),
                (f"{samples['n']} wrong samples of {samples['sampled']} held-out questions; target: the first wrong "
                 "line" if samples else "", samples)]
    parts: list[RenderableType] = []
    for setting, figs in settings:
        if figs is None:
            parts.append("(no own-sample setting: GSM8K has no deterministic right solution to compare with)")
            continue
        parts.append(localisation_table(figs, f"error localisation ({figures['run']}, {model}): {setting}"))
        for rule, (gain, lo, hi) in figs["hit@1_gain_over_logprob"].items():
            parts.append(f"Hit@1 gain of reward f over log-prob, paired "
                         f"({'first < tau' if rule.endswith('_first') else 'lowest'}): {gain:+.2f} "
                         f"[{lo:+.2f}, {hi:+.2f}]")
    first = "reward" if "reward" in perturbed["hit@1"] else "policy_logprob"
    for rule in (first, f"{first}_first"):
        parts.append(f"hit@1 of {rule} by perturbation: " + ", ".join(
            f"{kind} {v[rule]:.2f} (n={v['n']})" for kind, v in perturbed["by_kind"].items() if rule in v))
    return parts


def summary_table(summary: dict, title: str) -> Table:
    """A run's summary.json as a two-column table; nested figures (dicts, e.g. by kind) are left out."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if not isinstance(value, dict):
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    return table


FIT_FIGURES = {"clean_vs_perturbed_auroc": "expert vs its perturbed copy: AUROC",
               "hit1": "first change of a perturbed copy at the lowest token: Hit@1",
               "step1": "step Hit@1: the changed line is the lowest token's (lowest) or lowest-mean (line)",
               "expert_over_wrong": "expert above the policy's own wrong answer"}


def fit_table(summary: dict, title: str, trace_scores: tuple[str, ...]) -> Table:
    """`minirl train --algo reward`'s held-out figures: the reward beside the policy's log-prob, 95 % intervals,
    for each way of scoring a trace (`trace_scores`, e.g. the mean, min or last token; Hit@1: the lowest token)."""
    table = Table(title=title)
    for name, justify in (("held-out figure", "left"), ("trace score", "left"), ("reward (D logit)", "right"),
                          ("f", "right"), ("policy log-prob", "right")):
        table.add_column(name, justify=justify)
    for key, what in FIT_FIGURES.items():
        for how in {"hit1": ("lowest",), "step1": ("lowest", "line")}.get(key, trace_scores):
            cells = []
            for score in ("reward", "f", "logprob"):
                value, ci = summary.get(f"{key}_{score}_{how}"), summary.get(f"{key}_{score}_{how}_ci")
                cells.append("-" if value is None or math.isnan(value) else  # None or NaN: nothing to measure
                             f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
            if set(cells) != {"-"}:  # e.g. no pooled answers: no expert-over-wrong rows
                table.add_row(what, how, *cells)
    if "step1_chance" in summary:
        table.add_row("step Hit@1 by chance (1 / lines)", "", f"{summary['step1_chance']:.3f}", "", "")
    return table


# ---------------------------------------------------------------- helpers


def _cell(row: dict, key: str) -> str:
    return f"{row[key]:.3f}" if key in row else ""


def _localisation_rules(key: str, thresholds: list[float | None]) -> list[tuple[str, str]]:
    """(rule as shown, name in the figures) for one score: `lowest`, and `first < tau` where a fold has a tau."""
    if key == "chance":
        return [("uniform", key)]
    taus = [t for t in thresholds if t is not None]
    return [("lowest", key)] + ([(f"first < {'/'.join(f'{t:.1f}' for t in taus)}", f"{key}_first")] if taus else [])

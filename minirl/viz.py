"""Per-token reward views (M7), and the tables that the CLI and the tutorials print.

The reward model gives each response token a reward. `print_trace` prints the decoded tokens on a diverging
palette centred at 0 (by default orange below, blue above, plain near 0: a pair that colour-blind readers tell
apart; `palette="red-green"` gives the classic one), marks the lowest-reward token (bold underline),
optionally marks a token range such as the place a perturbation was made (italic reverse), and lists per-step
sums, where a step is one line of the solution. Without colour (NO_COLOR, or output to a file or pipe) it prints
`plain_trace` instead: one token per line with its reward, the same flags and the same sums. `save_html` writes
the coloured view to an HTML file (inline styles), to share it.

The tables (`rerank_table_view`, `localisation_table`, `summary_table`) and `print_traces` render figures that
minirl.rerank, minirl.localise and minirl.runs compute, so `minirl rerank | inspect | train` and the tutorial
steps print the same views.

Left out on purpose: notebook widgets, merging tokens into words, and any layout for long lines beyond
rich's own wrapping. The caller decodes the tokens and computes the rewards; nothing here imports torch.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.color import Color
from rich.console import Console, Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

# (negative end, positive end) of each diverging palette, ColorBrewer colours
PALETTES = {"blue-orange": ((230, 97, 1), (33, 102, 172)),  # PuOr's orange, RdBu's blue: colour-blind safe
            "red-green": ((215, 48, 39), (26, 152, 80))}  # RdYlGn's ends: ~1 man in 12 cannot tell them apart
PALETTE = "blue-orange"  # the default
NEUTRAL = (247, 247, 247)  # near-white, what a reward of 0 would blend from
LOWEST = Style(bold=True, underline=True)  # the lowest-reward token
MARKED = Style(italic=True, reverse=True)  # the `mark` range: the true change


def reward_style(value: float, scale: float, palette: str = PALETTE) -> str:
    """Rich style for one token: colour grows with |value| / scale (clipped at 1); plain ("") near 0."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    t = min(abs(value) / scale, 1.0)
    if t < 0.05:
        return ""
    end = PALETTES[palette][0 if value < 0 else 1]
    r, g, b = (round(n + (e - n) * t) for n, e in zip(NEUTRAL, end, strict=True))
    return f"{'bright_white' if t > 0.6 else 'black'} on rgb({r},{g},{b})"


def split_steps(tokens: list[str], rewards: list[float]) -> list[tuple[int, int, float]]:
    """The steps (lines) of a trace as (start, end, reward sum), token indices with `end` exclusive.

    A token belongs to the line on which it starts, and a token that contains a newline is the last token of its
    step: a newline is attributed to the line it ends. A token such as "\\n\\n" ends one step, never two, so
    blank lines make no empty steps.
    """
    _check(tokens, rewards)
    steps: list[tuple[int, int, float]] = []
    start = 0
    for i, token in enumerate(tokens):
        if "\n" in token or i == len(tokens) - 1:
            steps.append((start, i + 1, sum(rewards[start : i + 1])))
            start = i + 1
    return steps


def trace_text(tokens: list[str], rewards: list[float], *, mark: tuple[int, int] | None = None,
               scale: float | None = None, palette: str = PALETTE) -> Text:
    """The trace as one rich Text, each token appended verbatim with its reward style (plus LOWEST / MARKED)."""
    _check(tokens, rewards, mark)
    scale = _default_scale(rewards) if scale is None else scale
    low = _lowest(rewards) if tokens else -1
    text = Text()
    for i, (token, reward) in enumerate(zip(tokens, rewards, strict=True)):
        style = Style.parse(reward_style(reward, scale, palette))
        if i == low:
            style += LOWEST
        if mark is not None and mark[0] <= i < mark[1]:
            style += MARKED
        text.append(token, style)
    return text


def legend(scale: float, swatches: int = 5, *, marked: bool = False, palette: str = PALETTE) -> Text:
    """A colour bar from -scale to +scale with the numbers at the ends, and what the marks mean."""
    text = Text(f"reward {-scale:+.2f} ")
    for k in range(-swatches, swatches + 1):
        text.append(" 0 " if k == 0 else "  ", reward_style(scale * k / swatches, scale, palette))
    text.append(f" {scale:+.2f}   ")
    text.append("lowest token", LOWEST)
    if marked:
        text.append("   ")
        text.append("marked change", MARKED)
    return text


def render_trace(
    tokens: list[str],
    rewards: list[float],
    *,
    title: str = "",
    mark: tuple[int, int] | None = None,
    scale: float | None = None,
    palette: str = PALETTE,
) -> RenderableType:
    """Title, coloured trace, lowest token, marked range, per-step sums (lowest step in the palette's negative
    colour, bold) and legend."""
    _check(tokens, rewards, mark)
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    if not tokens:
        return Group(*parts, Text("(empty trace)"))
    scale = _default_scale(rewards) if scale is None else scale
    parts += [trace_text(tokens, rewards, mark=mark, scale=scale, palette=palette), Text(_lowest_line(tokens, rewards))]
    if mark is not None:
        parts.append(Text(_mark_line(tokens, mark), style="italic"))
    steps = split_steps(tokens, rewards)
    worst = min(range(len(steps)), key=lambda s: steps[s][2])
    low_style = Style(bold=True, color=Color.from_rgb(*PALETTES[palette][0]))
    for s, step in enumerate(steps):
        parts.append(Text(_step_line(s, step, tokens), style=low_style if s == worst and len(steps) > 1 else ""))
    parts.append(legend(scale, marked=mark is not None, palette=palette))
    return Group(*parts)


def plain_trace(
    tokens: list[str],
    rewards: list[float],
    mark: tuple[int, int] | None = None,
    *,
    title: str = "",
    scale: float | None = None,
) -> str:
    """Colourless form of `render_trace`: one `index  'token'  reward` line per token, then flags and step sums."""
    _check(tokens, rewards, mark)
    lines = [title] if title else []
    if not tokens:
        return "\n".join([*lines, "(empty trace)"])
    scale = _default_scale(rewards) if scale is None else scale
    low, steps = _lowest(rewards), split_steps(tokens, rewards)
    worst = min(range(len(steps)), key=lambda s: steps[s][2])
    width = min(max(len(repr(token)) for token in tokens), 24)
    lines.append(f"per-token rewards (colour scale {scale:.2f}): index, token, reward")
    for s, (start, end, _) in enumerate(steps):
        lines.append(f"step {s + 1}")
        for i in range(start, end):
            flags = "  <-- lowest" if i == low else ""
            flags += "  [marked]" if mark is not None and mark[0] <= i < mark[1] else ""
            lines.append(f"  {i:4d}  {tokens[i]!r:<{width}}  {rewards[i]:+.2f}{flags}")
    lines.append(_lowest_line(tokens, rewards))
    if mark is not None:
        lines.append(_mark_line(tokens, mark))
    for s, step in enumerate(steps):
        lines.append(_step_line(s, step, tokens) + ("  <-- lowest step" if s == worst and len(steps) > 1 else ""))
    return "\n".join(lines)


def print_trace(
    tokens: list[str],
    rewards: list[float],
    console: Console | None = None,
    *,
    title: str = "",
    mark: tuple[int, int] | None = None,
    scale: float | None = None,
    palette: str = PALETTE,
) -> None:
    """Print `render_trace(...)`, or `plain_trace(...)` when the console has no colour (NO_COLOR, not a tty)."""
    console = console or Console()
    if console.no_color or console.color_system is None:
        console.print(Text(plain_trace(tokens, rewards, mark, title=title, scale=scale)), soft_wrap=True)
    else:
        console.print(render_trace(tokens, rewards, title=title, mark=mark, scale=scale, palette=palette))


def print_traces(traces: list[dict], where: str, question: str, what: str, console: Console,
                 expected: str | None = None, palette: str = PALETTE) -> None:
    """`minirl inspect`'s view of one question: each trace ({label, tokens, scores, mark, span, correct}, see
    `localise.score_traces`) on one colour scale, then whether its answer is right (when `correct` is set, against
    `expected`) and whether the lowest token falls in its marked range."""
    console.print(Text.assemble((f"{where}: ", "bold"), question))
    scale = max((abs(v) for t in traces for v in t["scores"]), default=0.0) or 1.0  # one scale: colours compare
    for t in traces:
        print_trace(t["tokens"], t["scores"], console, title=f"{t['label']} · {where} · {what}", mark=t["mark"],
                    scale=scale, palette=palette)
        if t.get("correct") is not None:
            console.print(f"answer {'right' if t['correct'] else 'wrong'} (expected {expected})"
                          + ("; marked: the first line that differs from the right solution" if t["mark"] else ""),
                          soft_wrap=True)
        if t["mark"] is None and t["span"] is not None:
            console.print("(the change cannot be marked: these tokens, decoded one by one, do not spell the text)")
        if t["mark"] is not None and len(t["tokens"]) > 1:
            low = _lowest(t["scores"][:-1])  # the final EOS is never blamed
            console.print(f"lowest non-EOS token inside the marked span: {'yes' if _inside(low, t['mark']) else 'no'}")


def save_html(path: str | Path, draw, width: int = 110) -> None:
    """Call `draw(console)` on a recording colour console and save what it printed as HTML with inline styles
    (one file, no stylesheet, for sharing); e.g. `save_html("trace.html", lambda c: print_trace(t, r, c))`."""
    console = Console(record=True, file=io.StringIO(), force_terminal=True, color_system="truecolor", width=width,
                      no_color=False)  # colour even under NO_COLOR: the file is the coloured view
    draw(console)
    console.save_html(str(path), inline_styles=True)


# ---------------------------------------------------------------- tables


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


# ---------------------------------------------------------------- helpers


def _check(tokens: list[str], rewards: list[float], mark: tuple[int, int] | None = None) -> None:
    if len(tokens) != len(rewards):
        raise ValueError(f"{len(tokens)} tokens but {len(rewards)} rewards")
    if mark is not None and not 0 <= mark[0] < mark[1] <= len(tokens):
        raise ValueError(f"mark {mark} is not a non-empty token range inside 0..{len(tokens)}")


def _default_scale(rewards: list[float]) -> float:
    return max((abs(r) for r in rewards), default=0.0) or 1.0


def _lowest(rewards: list[float]) -> int:
    return min(range(len(rewards)), key=rewards.__getitem__)  # the first one on ties


def _lowest_line(tokens: list[str], rewards: list[float]) -> str:
    low = _lowest(rewards)
    return f"lowest reward: token {low} {tokens[low]!r} ({rewards[low]:+.2f})"


def _mark_line(tokens: list[str], mark: tuple[int, int]) -> str:
    where = f"token {mark[0]}" if mark[1] - mark[0] == 1 else f"tokens {mark[0]}-{mark[1] - 1}"
    return f"marked change: {where} {''.join(tokens[mark[0] : mark[1]])!r}"


def _step_line(s: int, step: tuple[int, int, float], tokens: list[str]) -> str:
    start, end, total = step
    preview = "".join(tokens[start:end]).strip().replace("\n", " ")
    preview = preview if len(preview) <= 50 else preview[:47] + "..."
    count = f"{end - start} token" + ("" if end - start == 1 else "s")
    return f"step {s + 1}: {total:+.2f} ({count})  {preview}"



def _inside(index: int, span: tuple[int, int]) -> bool:
    return span[0] <= index < span[1]


def _cell(row: dict, key: str) -> str:
    return f"{row[key]:.3f}" if key in row else ""


def _localisation_rules(key: str, thresholds: list[float | None]) -> list[tuple[str, str]]:
    """(rule as shown, name in the figures) for one score: `lowest`, and `first < tau` where a fold has a tau."""
    if key == "chance":
        return [("uniform", key)]
    taus = [t for t in thresholds if t is not None]
    return [("lowest", key)] + ([(f"first < {'/'.join(f'{t:.1f}' for t in taus)}", f"{key}_first")] if taus else [])

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
import unicodedata
from pathlib import Path

from rich.color import Color
from rich.console import Console, Group, RenderableType
from rich.style import Style
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
    tokens = [visible(token) for token in tokens]
    if console.no_color or console.color_system is None:
        console.print(Text(plain_trace(tokens, rewards, mark, title=title, scale=scale)), soft_wrap=True)
    else:
        console.print(render_trace(tokens, rewards, title=title, mark=mark, scale=scale, palette=palette))


def print_traces(traces: list[dict], where: str, question: str, what: str, console: Console,
                 expected: str | None = None, palette: str = PALETTE) -> None:
    """`minirl inspect`'s view of one question: each trace ({label, tokens, scores, mark, span, correct}, see
    `localise.score_traces`) on one colour scale, then whether its answer is right (when `correct` is set, against
    `expected`) and whether the lowest token falls in its marked range."""
    console.print(Text.assemble((f"{where}: ", "bold"), visible(question)))
    expected = visible(expected) if expected is not None else None
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


# ---------------------------------------------------------------- helpers


def visible(text: str) -> str:
    """`text` with control characters but newline and tab shown as escapes (\\x1b), so that a question, trace or
    data file cannot move the cursor, clear the screen or retitle the terminal."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in text)


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

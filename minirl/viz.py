"""Per-token reward views (M7): show a solution with every token coloured by its learned reward.

The reward model gives each response token a reward. `print_trace` prints the decoded tokens on a diverging
palette centred at 0 (red below, green above, plain near 0), marks the lowest-reward token (bold underline),
optionally marks a token range such as the place a perturbation was made (italic reverse), and lists per-step
sums, where a step is one line of the solution. Without colour (NO_COLOR, or output to a file or pipe) it prints
`plain_trace` instead: one token per line with its reward, the same flags and the same sums.

Left out on purpose: HTML / notebook output, merging tokens into words, and any layout for long lines beyond
rich's own wrapping. The caller decodes the tokens and computes the rewards; nothing here imports torch.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.style import Style
from rich.text import Text

NEGATIVE = (215, 48, 39)  # red end of the palette
POSITIVE = (26, 152, 80)  # green end
NEUTRAL = (247, 247, 247)  # near-white, what a reward of 0 would blend from
LOWEST = Style(bold=True, underline=True)  # the lowest-reward token
MARKED = Style(italic=True, reverse=True)  # the `mark` range: the true change


def reward_style(value: float, scale: float) -> str:
    """Rich style for one token: colour grows with |value| / scale (clipped at 1); plain ("") near 0."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    t = min(abs(value) / scale, 1.0)
    if t < 0.05:
        return ""
    end = NEGATIVE if value < 0 else POSITIVE
    r, g, b = (round(n + (e - n) * t) for n, e in zip(NEUTRAL, end, strict=True))
    return f"{'white' if t > 0.6 else 'black'} on rgb({r},{g},{b})"


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


def trace_text(
    tokens: list[str], rewards: list[float], *, mark: tuple[int, int] | None = None, scale: float | None = None
) -> Text:
    """The trace as one rich Text, each token appended verbatim with its reward style (plus LOWEST / MARKED)."""
    _check(tokens, rewards, mark)
    scale = _default_scale(rewards) if scale is None else scale
    low = _lowest(rewards) if tokens else -1
    text = Text()
    for i, (token, reward) in enumerate(zip(tokens, rewards, strict=True)):
        style = Style.parse(reward_style(reward, scale))
        if i == low:
            style += LOWEST
        if mark is not None and mark[0] <= i < mark[1]:
            style += MARKED
        text.append(token, style)
    return text


def legend(scale: float, swatches: int = 5, *, marked: bool = False) -> Text:
    """A colour bar from -scale to +scale with the numbers at the ends, and what the marks mean."""
    text = Text(f"reward {-scale:+.2f} ")
    for k in range(-swatches, swatches + 1):
        text.append(" 0 " if k == 0 else "  ", reward_style(scale * k / swatches, scale))
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
) -> RenderableType:
    """Title, coloured trace, lowest token, marked range, per-step sums (lowest step in bold red) and legend."""
    _check(tokens, rewards, mark)
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    if not tokens:
        return Group(*parts, Text("(empty trace)"))
    scale = _default_scale(rewards) if scale is None else scale
    parts += [trace_text(tokens, rewards, mark=mark, scale=scale), Text(_lowest_line(tokens, rewards))]
    if mark is not None:
        parts.append(Text(_mark_line(tokens, mark), style="italic"))
    steps = split_steps(tokens, rewards)
    worst = min(range(len(steps)), key=lambda s: steps[s][2])
    for s, step in enumerate(steps):
        parts.append(Text(_step_line(s, step, tokens), style="bold red" if s == worst and len(steps) > 1 else ""))
    parts.append(legend(scale, marked=mark is not None))
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
) -> None:
    """Print `render_trace(...)`, or `plain_trace(...)` when the console has no colour (NO_COLOR, not a tty)."""
    console = console or Console()
    if console.no_color or console.color_system is None:
        console.print(Text(plain_trace(tokens, rewards, mark, title=title, scale=scale)), soft_wrap=True)
    else:
        console.print(render_trace(tokens, rewards, title=title, mark=mark, scale=scale))


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

"""Tests for minirl.viz: faithful text, palette direction, lowest / marked tokens, step sums, plain fallback, and
the tables shared by the CLI and the tutorials, on hand-built figures."""

from __future__ import annotations

import io

import pytest
from rich.color import ColorTriplet
from rich.console import Console
from rich.style import Style
from rich.text import Text

from minirl.tables import auroc_interval_lines, fit_table, localisation_table, rerank_table_view, summary_table
from minirl.viz import plain_trace, print_trace, print_traces, render_trace, reward_style, split_steps, trace_text

TOKENS = ["Gus", " has", " 3", " apples", ".\n", "He", " buys", "  4", "\n\n", "####", " 7"]
REWARDS = [0.1, 0.05, 0.3, 0.2, 0.0, 0.1, -0.4, -2.5, 0.1, 0.2, -1.0]  # lowest: token 7 '  4'


def colour_console(file: io.StringIO | None = None) -> Console:
    return Console(record=True, width=100, force_terminal=True, color_system="truecolor", file=file or io.StringIO())


def token_styles(text: Text, tokens: list[str]) -> list[Style]:
    """The style in effect at the first character of each token."""
    console, styles, offset = colour_console(), [], 0
    for token in tokens:
        styles.append(text.get_style_at_offset(console, offset))
        offset += len(token)
    return styles


def background(style: Style) -> ColorTriplet:
    assert style.bgcolor is not None, f"no background in {style}"
    return style.bgcolor.get_truecolor()


def orange(c: ColorTriplet) -> bool:
    return c.red > c.green > c.blue


def blue(c: ColorTriplet) -> bool:
    return c.blue > c.green > c.red


def test_default_palette_is_blue_orange_and_red_green_is_an_option() -> None:
    ends = [background(Style.parse(reward_style(v, 1.0))) for v in (-1.0, -0.5, 0.5, 1.0)]
    assert orange(ends[0]) and orange(ends[1]) and blue(ends[2]) and blue(ends[3])  # colour-blind safe by default
    red, green = (background(Style.parse(reward_style(v, 1.0, "red-green"))) for v in (-0.5, 0.5))
    assert red.red > red.green and red.red > red.blue
    assert green.green > green.red and green.green > green.blue
    with pytest.raises(KeyError):
        reward_style(1.0, 1.0, "rainbow")


def test_reward_style_diverges_around_zero() -> None:
    assert reward_style(0.0, 1.0) == ""
    # intensity grows with |value| and clips at scale
    weak, strong = background(Style.parse(reward_style(-0.2, 1.0))), background(Style.parse(reward_style(-0.9, 1.0)))
    assert strong.green < weak.green
    assert reward_style(-5.0, 1.0) == reward_style(-1.0, 1.0) != reward_style(-0.9, 1.0)
    with pytest.raises(ValueError):
        reward_style(1.0, 0.0)


def test_trace_text_is_faithful_and_coloured_by_sign() -> None:
    text = trace_text(TOKENS, REWARDS)
    assert text.plain == "".join(TOKENS)
    styles = token_styles(text, TOKENS)
    for reward, style in zip(REWARDS, styles, strict=True):
        if abs(reward) / 2.5 < 0.05:
            assert style.bgcolor is None
        elif reward < 0:
            assert orange(background(style))
        else:
            assert blue(background(style))


def test_exported_terminal_text_keeps_tokens_spaces_and_newlines() -> None:
    console = colour_console()
    print_trace(TOKENS, REWARDS, console, title="demo")
    exported = console.export_text()
    assert "".join(TOKENS) in exported  # in order, double space and blank line kept
    assert exported.startswith("demo\nGus has 3 apples.\nHe buys  4\n\n#### 7\n")
    assert "\x1b[" in console.file.getvalue()  # the colour path really ran


def test_lowest_token_is_marked_and_reported() -> None:
    styles = token_styles(trace_text(TOKENS, REWARDS), TOKENS)
    assert [i for i, s in enumerate(styles) if s.bold and s.underline] == [7]
    console = colour_console()
    console.print(render_trace(TOKENS, REWARDS))
    assert "lowest reward: token 7 '  4' (-2.50)" in console.export_text()


def test_mark_range_is_styled_and_reported() -> None:
    styles = token_styles(trace_text(TOKENS, REWARDS, mark=(5, 7)), TOKENS)
    assert [i for i, s in enumerate(styles) if s.italic and s.reverse] == [5, 6]
    console = colour_console()
    console.print(render_trace(TOKENS, REWARDS, mark=(5, 7)))
    assert "marked change: tokens 5-6 'He buys'" in console.export_text()
    with pytest.raises(ValueError):
        render_trace(TOKENS, REWARDS, mark=(3, 3))


def test_step_sums_attribute_newline_to_the_line_it_ends() -> None:
    steps = split_steps(["a", " b", "\n", "c"], [1.0, -2.0, 0.5, 3.0])
    assert steps == [(0, 3, pytest.approx(-0.5)), (3, 4, pytest.approx(3.0))]
    # "\n\n" ends one step (no empty step); a mid-token newline ends the step the token starts in
    assert [s[:2] for s in split_steps(TOKENS, REWARDS)] == [(0, 5), (5, 9), (9, 11)]
    assert [s[:2] for s in split_steps(["x.\nY", "z"], [1.0, 2.0])] == [(0, 1), (1, 2)]


def test_render_shows_step_sums_lowest_step_and_legend() -> None:
    console = colour_console()
    console.print(render_trace(["a", " b", "\n", "c"], [1.0, -2.0, 0.5, 3.0]))
    out = console.export_text(clear=False)
    assert "step 1: -0.50 (3 tokens)  a b" in out
    assert "step 2: +3.00 (1 token)  c" in out
    assert "-3.00" in out and "+3.00" in out  # legend ends at -scale .. +scale
    exported = console.export_text(styles=True)
    step1 = next(line for line in exported.splitlines() if "step 1:" in line)
    step2 = next(line for line in exported.splitlines() if "step 2:" in line)
    assert "\x1b[1;38;2;230;97;1m" in step1 and "\x1b[" not in step2  # lowest step: bold, the palette's orange


def test_explicit_scale_is_used() -> None:
    text = trace_text(["a", "b"], [-1.0, 1.0], scale=10.0)
    assert token_styles(text, ["a", "b"])[1].bgcolor == Style.parse(reward_style(1.0, 10.0)).bgcolor
    console = colour_console()
    console.print(render_trace(["a", "b"], [-1.0, 1.0], scale=10.0))
    assert "-10.00" in console.export_text()


@pytest.mark.parametrize("console_kwargs", [{"no_color": True, "force_terminal": True}, {"color_system": None}])
def test_plain_fallback_has_no_escapes_and_keeps_numbers(console_kwargs: dict) -> None:
    file = io.StringIO()
    print_trace(TOKENS, REWARDS, Console(file=file, width=100, **console_kwargs), mark=(5, 7))
    out = file.getvalue()
    assert "\x1b" not in out
    assert out.strip() == plain_trace(TOKENS, REWARDS, mark=(5, 7))
    assert "     7  '  4'      -2.50  <-- lowest" in out
    assert "     5  'He'       +0.10  [marked]" in out
    assert "step 2: -2.70 (4 tokens)  He buys  4  <-- lowest step" in out
    assert "colour scale 2.50" in out
    assert "'\\n\\n'" in out  # newlines shown escaped, one token per line


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        render_trace(["a", "b"], [1.0])
    with pytest.raises(ValueError):
        plain_trace(["a"], [1.0, 2.0])
    with pytest.raises(ValueError):
        print_trace(["a"], [], colour_console())


def test_empty_trace() -> None:
    console = colour_console()
    print_trace([], [], console)
    assert "(empty trace)" in console.export_text()
    assert plain_trace([], []) == "(empty trace)"



# ---------------------------------------------------------------- tables and the one-question view


def rendered(*renderables) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    for r in renderables:
        console.print(r, markup=False)
    return console.file.getvalue()


def rows(text: str) -> list[list[str]]:
    """The cells of each body row of a rendered table (box-drawing separators split the cells)."""
    return [[c.strip() for c in line.strip()[1:-1].split("│")] for line in text.splitlines() if line.startswith("│")]


def test_fit_table_rows_per_trace_score_and_none_for_what_was_not_measured() -> None:
    figures = {"clean_vs_perturbed_auroc_reward_mean": 0.8, "clean_vs_perturbed_auroc_reward_mean_ci": [0.7, 0.9],
               "clean_vs_perturbed_auroc_logprob_mean": 0.6, "clean_vs_perturbed_auroc_reward_low5": 0.95,
               "expert_over_wrong_reward_mean": float("nan"), "expert_over_wrong_logprob_mean": float("nan")}
    body = rows(rendered(fit_table(figures, "t", ("mean", "low5"))))
    assert ["expert vs its perturbed copy: AUROC", "mean", "0.800 [0.70, 0.90]", "-", "0.600"] in body
    assert ["expert vs its perturbed copy: AUROC", "low5", "0.950", "-", "-"] in body
    assert not any(row[0].startswith("expert above") for row in body)  # NaN (no pooled answers): no row
    assert not any(row[1] in ("min", "last") for row in body)  # only the trace scores asked for


def test_rerank_table_view() -> None:
    figures = {"random": {"success@1": 0.25, "success@2": 0.5, "success@1_ci": [0.1, 0.4]},
               "mean": {"success@1": 0.75, "success@2": 1.0, "success@1_ci": [0.5, 1.0], "auroc": 0.8,
                        "auroc_pooled": 0.7, "auroc_ci": [0.6, 0.9], "auroc_pooled_ci": [0.55, 0.85]},
               "pass@k": {"pass@1": 0.9, "pass@2": 1.0}}
    text = rendered(rerank_table_view(figures, (1, 2), "best-of-2"))
    assert "best-of-2" in text and "AUROC within q" in text and "CI @1" not in text
    assert rows(text) == [["random", "0.250", "0.500", "", ""], ["mean", "0.750", "1.000", "0.800", "0.700"],
                          ["pass@k", "0.900", "1.000", "", ""]]
    text = rendered(rerank_table_view(figures, (1,), "t", labels={"mean": "reward: mean"}, ci=True))
    assert rows(text) == [["reward: mean", "0.750", "0.50-1.00", "0.800", "0.700"]]
    assert auroc_interval_lines(figures, ("mean", "random", "f-logpi")) == [
        "mean: AUROC within question 0.800 [0.600, 0.900], pooled 0.700 [0.550, 0.850] (95 % bootstrap over "
        "questions)"]


def test_localisation_table() -> None:
    names = ["reward", "reward_first", "policy_logprob", "chance"]  # no `first` tau for the log-prob here
    figures = {"n": 4, "thresholds": {"reward": [-1.25, -2.0], "policy_logprob": [None, None]},
               "hit@1": dict(zip(names, [0.5, 0.75, 0.25, 0.1])), "hit@3": dict(zip(names, [1.0, 1.0, 0.5, 0.3])),
               "step@1": dict(zip(names, [0.5, None, 0.5, 0.4])), "hit@1_ci": dict.fromkeys(names, [0.0, 1.0])}
    assert rows(rendered(localisation_table(figures, "title"))) == [
        ["reward f", "lowest", "0.50 [0.00, 1.00]", "1.00", "0.50"],
        ["reward f", "first < -1.2/-2.0", "0.75 [0.00, 1.00]", "1.00", "-"],
        ["policy log-prob", "lowest", "0.25 [0.00, 1.00]", "0.50", "0.50"],
        ["chance", "uniform", "0.10 [0.00, 1.00]", "0.30", "0.40"]]


def test_summary_table_leaves_out_nested_figures() -> None:
    text = rendered(summary_table({"sampled_acc": 0.123456, "steps": 3, "by_kind": {"a": 1}}, "airl · runs/x"))
    assert "airl · runs/x" in text and rows(text) == [["sampled_acc", "0.123"], ["steps", "3"]]


def test_print_traces_reports_answer_and_lowest_token_in_mark() -> None:
    trace = {"label": "sampled trace", "tokens": ["a", " b", "\n", "c", "<eos>"], "scores": [0.5, 0.1, 0.2, -1.0, -3.0],
             "span": (1, 2), "mark": (3, 4), "correct": False}
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_traces([trace, {**trace, "label": "given", "mark": None, "correct": None}], "q 1", "How many?", "what",
                 console, expected="7")
    out = console.file.getvalue()
    assert out.startswith("q 1: How many?\nsampled trace · q 1 · what\n")
    assert "answer wrong (expected 7); marked: the first line that differs" in out
    assert "lowest non-EOS token inside the marked span: yes" in out  # -1.0 at 3: the EOS (-3.0) is not blamed
    assert out.count("answer ") == 1 and "(the change cannot be marked" in out  # the second: a span, no mark

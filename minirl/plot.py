"""Pictures of runs: training curves and score histograms in one PNG (`minirl plot`, the tutorial steps' figures).

It reads only a run folder's files (see minirl.runs) and imports nothing from torch, so a run can be drawn on any
machine with matplotlib (`pip install -e '.[plot]'`). metrics.jsonl rows come in four kinds, told apart by their
step key:
  iter         a PPO iteration: reward_per_seq, approx_kl, kl_ref, clip_frac, entropy, response_len, disc_* (AIRL)
  eval_step    an evaluation on validation problems (--algo reward: on test problems): sampled_acc, reward_auroc,
               logprob_auroc, ...
  warmup_step  a discriminator step before PPO (M2): disc_loss, disc_acc_expert / _policy / _perturbed (tutorial
               step 03 writes its discriminator-only steps so too)
  step         a pretraining or SFT step (M6): loss
A panel is drawn only when some run logged one of its keys; runs are overlaid, one colour each, named by their
folder. The discriminator's panel counts its steps: the warm-up first, then one step per PPO iteration.
eval_samples.jsonl (the final evaluation's scored samples) adds two histograms: the trace reward (mean token
reward f, M5) and the policy's mean log-prob, each for right vs wrong samples (M7: which score separates them?).

Left out on purpose: smoothing, interactive figures, a style of its own. The figure is a matplotlib `Figure` on the
Agg canvas: no pyplot, no display, no global state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from minirl.config import UserError
from minirl.data import is_number

MISSING = "minirl plot needs matplotlib: pip install -e '.[plot]'"
# (title, row kind, keys): one panel each, in this order; "disc" = warm-up steps, then iterations
CURVES = [
    ("validation sampled accuracy", "eval_step", ("sampled_acc",)),
    ("validation AUROC in question (M7)", "eval_step", ("reward_auroc", "logprob_auroc")),
    ("discriminator accuracy (M2)", "disc", ("disc_acc_expert", "disc_acc_policy", "disc_acc_perturbed")),
    ("discriminator mean logit (M2)", "disc", ("disc_logit_expert", "disc_logit_policy", "disc_logit_perturbed")),
    ("discriminator loss (0.69 = log 2)", "disc", ("disc_loss",)),
    ("reward per trace", "iter", ("reward_per_seq",)),
    ("PPO approx-KL per token", "iter", ("approx_kl",)),
    ("KL to the start, per trace (M4)", "iter", ("kl_ref",)),
    ("PPO clip fraction", "iter", ("clip_frac",)),
    ("policy entropy", "iter", ("entropy",)),
    ("response length (tokens)", "iter", ("response_len",)),
    ("pretraining / SFT loss", "step", ("loss",)),
]
X_LABELS = {"eval_step": "step / iteration", "disc": "discriminator step", "iter": "iteration", "step": "step"}
LINESTYLES = ("-", "--", ":")  # the keys of one panel; colour tells the runs apart
RIGHT, WRONG = "#2166ac", "#e66101"  # blue / orange, the colour-blind-safe pair of minirl.viz
NCOLS = 4
FORMATS = (".png", ".pdf", ".svg")  # what `out` may end in; no suffix: .png


class PlotError(UserError):
    """Files that cannot be plotted: the CLI prints one line."""


def plot_runs(folders: list[str | Path], out: str | Path | None = None) -> Path:
    """Draw the curves of every run in `folders` (and the histograms of those with eval_samples.jsonl) into one
    figure, a PNG unless `out` ends in .pdf or .svg; returns the file written: `out` (.png added when it has no
    suffix), else RUN/curves.png for one run and curves.png for several."""
    Figure, FigureCanvasAgg, Line2D = require_matplotlib()
    folders = [Path(f) for f in folders]
    out = figure_path(out, folders)
    runs = dict(zip(run_names(folders), (read_metrics(f) for f in folders)))
    curves = curve_panels(runs)
    histograms = [[(name, *pair) for pair in histogram_pairs(f)] for name, f in zip(runs, folders)]
    if not curves and not any(histograms):
        raise PlotError(f"nothing to plot: no known metric in {', '.join(str(f) for f in folders)}")
    slots, ncols = layout(len(curves), [len(pairs) for pairs in histograms])
    nrows = math.ceil((slots[-1] + 1) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.3 * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).flat
    colours = {name: f"C{i % 10}" for i, name in enumerate(runs)}
    for slot, (title, kind, keys) in zip(slots, curves):
        draw_curves(axes[slot], title, kind, keys, runs, colours)
    for slot, (name, title, right, wrong) in zip(slots[len(curves):], sum(histograms, [])):
        draw_histogram(axes[slot], f"{title} · {name}" if len(runs) > 1 else title, right, wrong)
    for slot in set(range(nrows * ncols)) - set(slots):
        axes[slot].set_axis_off()
    fig.legend(handles=[Line2D([], [], color=colours[name], label=name) for name in runs],
               loc="outside upper center", ncols=min(len(runs), 6), frameon=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def figure_path(out: str | Path | None, folders: list[Path]) -> Path:
    """The file the figure goes to, checked before any drawing: `out` with .png added when it has no suffix (what
    matplotlib writes), else the default. A suffix other than FORMATS, a folder, or a file where a folder of the
    path should be is one PlotError; missing folders are created when the figure is saved."""
    if not out:
        return folders[0] / "curves.png" if len(folders) == 1 else Path("curves.png")
    path = Path(out)
    if path.is_dir():  # matplotlib would write a .png beside it
        raise PlotError(f"--out {out}: is a folder; name the figure, e.g. --out {path / 'curves.png'}")
    path = path if path.suffix else path.with_suffix(".png")
    if path.suffix.lower() not in FORMATS:
        raise PlotError(f"--out {out}: a figure is a {'/'.join(FORMATS)} file (no suffix: .png), not {path.suffix}")
    if path.is_dir():
        raise PlotError(f"--out {out}: {path} is a folder")
    existing = next(parent for parent in path.parents if parent.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise PlotError(f"--out {out}: {existing} is not a folder")
    return path


def layout(n_curves: int, n_histograms: list[int]) -> tuple[list[int], int]:
    """(grid slot of each panel, columns): the curves first, then each run's histograms, a run's two side by side
    in one row (an even slot, with 2 or 4 columns)."""
    slots, pos = list(range(n_curves)), n_curves
    for n in n_histograms:
        pos += pos % 2 if n == 2 else 0
        slots += range(pos, pos + n)
        pos += n
    return slots, 2 if pos <= 4 else NCOLS


def curve_panels(runs: dict[str, list[dict]]) -> list[tuple[str, str, tuple[str, ...]]]:
    """The panels of CURVES that some run logged a number for."""
    return [panel for panel in CURVES if any(logged(rows, panel[2]) for rows in runs.values())]


def require_matplotlib():
    """(Figure, FigureCanvasAgg, Line2D), or one line saying how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        raise PlotError(MISSING) from None
    return Figure, FigureCanvasAgg, Line2D


# ---------------------------------------------------------------- reading


def read_metrics(folder: Path) -> list[dict]:
    """The rows of `folder`/metrics.jsonl; one line naming the folder when it has none."""
    path = folder / "metrics.jsonl"
    if not folder.is_dir():
        raise PlotError(f"{folder}: no such folder")
    if not path.is_file():
        raise PlotError(f"{folder}: no metrics.jsonl (not a minirl run folder?)")
    return read_jsonl(path)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line) if line.strip() else {})
        except ValueError:
            raise PlotError(f"{path}, line {n}: not JSON") from None
        if not isinstance(rows[-1], dict):
            raise PlotError(f"{path}, line {n}: not a JSON object")
    return rows


def run_names(folders: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path when two runs share a name."""
    names = [f.resolve().name for f in folders]
    return names if len(set(names)) == len(names) else [str(f) for f in folders]


def logged(rows: list[dict], keys: tuple[str, ...]) -> bool:
    return any(is_number(row.get(key)) for row in rows for key in keys)


def series(rows: list[dict], kind: str, key: str) -> tuple[list[float], list[float]]:
    """(x, y) of `key` over the rows of one kind; a "disc" step counts the warm-up, then the iterations."""
    warmup = max((row["warmup_step"] for row in rows if "warmup_step" in row), default=0)
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if not is_number(value):
            continue
        if kind == "disc" and ("warmup_step" in row or "iter" in row):
            xs.append(row["warmup_step"] if "warmup_step" in row else warmup + row["iter"])
        elif kind in row:
            xs.append(row[kind])
        else:
            continue
        ys.append(value)
    return xs, ys


def histogram_pairs(folder: Path) -> list[tuple[str, list[float], list[float]]]:
    """(title, right, wrong) of the trace reward and the policy's mean log-prob of each sample in
    `folder`/eval_samples.jsonl; none when the run has no such file."""
    path = folder / "eval_samples.jsonl"
    if not path.is_file():
        return []
    samples = []
    for n, record in enumerate(read_jsonl(path), 1):
        these = record.get("samples", [])  # a blank line reads as {}: no samples
        if not isinstance(these, list) or not all(map(plottable, these)):
            raise PlotError(f"{path}, line {n}: not a sample record (its 'samples' a list of objects, each with "
                            "'correct' true or false, 'rewards' a list of numbers or null, 'logprob' a number or null)")
        samples += these
    scores = [("trace reward (mean f)", lambda s: sum(s["rewards"]) / len(s["rewards"]) if s.get("rewards") else None),
              ("policy mean log-prob", lambda s: s.get("logprob"))]
    pairs = []
    for title, score in scores:
        right = [score(s) for s in samples if s["correct"] and score(s) is not None]
        wrong = [score(s) for s in samples if not s["correct"] and score(s) is not None]
        if right or wrong:
            pairs.append((title, right, wrong))
    return pairs


def plottable(sample) -> bool:
    """A sample of eval_samples.jsonl (rerank.save_records) with what the histograms read of it."""
    rewards = sample.get("rewards") if isinstance(sample, dict) else None
    return (isinstance(sample, dict) and isinstance(sample.get("correct"), bool)
            and (rewards is None or isinstance(rewards, list) and all(map(is_number, rewards)))
            and (sample.get("logprob") is None or is_number(sample["logprob"])))


# ---------------------------------------------------------------- drawing


def draw_curves(ax, title: str, kind: str, keys: tuple[str, ...], runs: dict[str, list[dict]],
                colours: dict[str, str]) -> None:
    """One panel: each key of each run, colour by run and line style by key (a key legend when there are two)."""
    shown = [key for key in keys if any(logged(rows, (key,)) for rows in runs.values())]
    for name, rows in runs.items():
        for key in shown:
            xs, ys = series(rows, kind, key)
            ax.plot(xs, ys, LINESTYLES[keys.index(key)], color=colours[name], marker="o" if len(xs) < 30 else None,
                    markersize=3, linewidth=1.4)
        warmup = max((row["warmup_step"] for row in rows if "warmup_step" in row), default=0)
        if kind == "disc" and warmup and any("iter" in row for row in rows):
            ax.axvline(warmup, color="grey", linewidth=0.8, linestyle=":")  # PPO starts here
    if len(shown) > 1:
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], linestyle=LINESTYLES[keys.index(k)], color="black", label=k) for k in shown],
                  fontsize="small", frameon=False)
    ax.set_title(title if len(shown) > 1 else f"{title}: {shown[0]}", fontsize="medium")
    ppo = kind == "disc" and any("iter" in row for rows in runs.values() for row in rows)
    ax.set_xlabel(X_LABELS[kind] + (" (warm-up | PPO)" if ppo else ""))
    ax.grid(alpha=0.3)


def draw_histogram(ax, title: str, right: list[float], wrong: list[float]) -> None:
    """Right and wrong samples' scores on shared bins, each group scaled to sum to 1 (a few right samples among
    many wrong ones stay visible): the less the two overlap, the better the score ranks samples."""
    values = right + wrong
    lo, hi = min(values), max(values)
    lo, hi = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    bins = [lo + (hi - lo) * i / 20 for i in range(21)]
    for group, colour, label in ((right, RIGHT, "right"), (wrong, WRONG, "wrong")):
        if group:
            weights = [1 / len(group)] * len(group)
            ax.hist(group, bins=bins, weights=weights, color=colour, alpha=0.35, histtype="stepfilled")
            ax.hist(group, bins=bins, weights=weights, color=colour, histtype="step", linewidth=1.5,
                    label=f"{label} ({len(group)} samples)")
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("score per sample (held-out questions)")
    ax.locator_params(axis="x", nbins=5)
    ax.set_ylabel("share of the group")
    ax.legend(fontsize="small", frameon=False)

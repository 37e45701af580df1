"""`ferkit report RUN_DIR...`: one self-contained HTML page comparing training runs.

The page holds: the options that differ between the runs (config diff), a table (model,
parameters, epochs, last and best val accuracy, macro-F1 when an evaluation JSON is in the run
dir or --data is given, train time), the mean and spread over seeds of runs that share every
other option, the learning curves overlaid (val accuracy; train and val loss) and, with
--data, each run's confusion matrix on its own validation faces, side by side. Every
figure is a PNG embedded as base64, so the file can be mailed or attached as it is.

This module draws the figures and writes the page; reading the runs is ferkit.evaluation.runs',
comparing and grouping them ferkit.evaluation.compare's (whose names it re-exports).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any

from ferkit.evaluation.compare import (
    MISSING,
    SeedGroup,
    config_diff,
    recipe_rows,
    seed_groups,
    summary_rows,
)
from ferkit.evaluation.plots import row_normalise
from ferkit.evaluation.runs import RunRecord, collect_runs, load_run
from ferkit.plotting import pyplot

# ---------------------------------------------------------------------------------------------
# figures




def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curves_png(runs: list[RunRecord]) -> str | None:
    """Val accuracy | train (solid) and val (dashed) loss, one colour per run."""
    if not any(r.metrics for r in runs):
        return None
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, r in enumerate(runs):
        if not r.metrics:
            continue
        color = f"C{i % 10}"
        ep = [m.get("epoch", j + 1) for j, m in enumerate(r.metrics)]
        ax_acc.plot(ep, [m.get("val_acc") for m in r.metrics], color=color, marker=".",
                    label=r.label)
        ax_loss.plot(ep, [m.get("train_loss") for m in r.metrics], color=color, marker=".",
                     label=r.label)
        ax_loss.plot(ep, [m.get("val_loss") for m in r.metrics], color=color, ls="--",
                     marker="x")
    ax_acc.set_title("validation accuracy")
    ax_loss.set_title("loss (solid: train, dashed: val)")
    from matplotlib.ticker import MaxNLocator

    last = max((len(r.metrics) for r in runs), default=1)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if last <= 3:
            ax.set_xticks(range(1, last + 1))
            ax.set_xlim(0.5, last + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def confusion_png(run: RunRecord) -> str | None:
    if run.confusion is None:
        return None
    plt = pyplot()
    norm = row_normalise(run.confusion)
    classes = list(run.classes)
    fig, ax = plt.subplots(figsize=(4.6, 4.3))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(run.label, fontsize=9)
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:4px 8px}
th{background:#f4f4f4;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:bold;background:#eef7ee}.muted{color:#888}img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}code{font-size:.9em}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _cell(v: Any) -> str:
    if v is MISSING:
        return '<td class="muted">(absent)</td>'
    if isinstance(v, float):
        return f'<td class="num">{v:.6g}</td>'
    if isinstance(v, int | bool) or v is None:
        return f'<td class="num">{_esc(json.dumps(v))}</td>'
    if isinstance(v, list | dict):
        return f"<td><code>{_esc(json.dumps(v))}</code></td>"
    return f"<td>{_esc(v)}</td>"


def _fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def _spread(st: dict[str, float] | None, plus_minus: str = "\u00b1") -> str:
    """0.6602 ± 0.0010 (0.6591-0.6612), or the one value."""
    if st is None:
        return "-"
    if st["n"] == 1:
        return f"{st['mean']:.4f}"
    return f"{st['mean']:.4f} {plus_minus} {st['sd']:.4f} ({st['min']:.4f}-{st['max']:.4f})"


def render_html(runs: list[RunRecord], title: str = "ferkit run comparison") -> str:
    rows = summary_rows(runs)
    accs = [r["best_val_acc"] for r in rows if r["best_val_acc"] is not None]
    top = max(accs) if accs else None
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_esc(title)}"
             f"</title><style>{_CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>",
             f"<p class=muted>{len(runs)} runs, generated "
             f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by ferkit report</p>"]

    parts.append("<h2>Runs</h2><table><tr><th>run</th><th>model</th><th>parameters</th>"
                 "<th>epochs</th><th>last val acc</th><th>best val acc (epoch)</th>"
                 "<th>macro-F1</th>"
                 "<th>train time</th></tr>")
    for r in rows:
        acc = r["best_val_acc"]
        cls = "num best" if acc is not None and acc == top and len(runs) > 1 else "num"
        acc_s = "-" if acc is None else f"{acc:.4f} ({r['best_epoch']})"
        last_s = "-" if r["last_val_acc"] is None else f"{r['last_val_acc']:.4f}"
        f1 = "-" if r["macro_f1"] is None else \
            f"{r['macro_f1']:.4f} <span class=muted>{_esc(r['macro_f1_source'])}</span>"
        params = "-" if r["parameters"] is None else f"{r['parameters']:,}"
        parts.append(f"<tr><td title='{_esc(r['path'])}'>{_esc(r['run'])}</td>"
                     f"<td>{_esc(r['model'])}</td><td class=num>{params}</td>"
                     f"<td class=num>{r['epochs']}</td><td class=num>{last_s}</td>"
                     f"<td class='{cls}'>{acc_s}</td>"
                     f"<td class=num>{f1}</td><td class=num>{_fmt_seconds(r['train_seconds'])}"
                     "</td></tr>")
    parts.append("</table>")
    notes = [(r.label, n) for r in runs for n in r.notes]
    if notes:
        parts.append("<ul class=muted>" + "".join(f"<li>{_esc(a)}: {_esc(n)}</li>"
                                                  for a, n in notes) + "</ul>")

    groups = seed_groups(runs)
    if any(len(g.runs) > 1 for g in groups):
        parts.append("<h2>Seeds</h2><p class=muted>Runs that share every option but the seed, "
                     "as one recipe: mean &plusmn; sample standard deviation (min-max) of the "
                     "last epoch's and the best epoch's val accuracy.</p>"
                     "<table><tr><th>recipe</th><th>runs</th><th>seeds</th><th>epochs</th>"
                     "<th>last val acc</th><th>best val acc</th></tr>")
        for g in groups:
            epochs = g.epochs
            ep = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
            parts.append(f"<tr><td>{_esc(g.label)}</td><td class=num>{len(g.runs)}</td>"
                         f"<td>{_esc(', '.join(map(str, g.seeds)))}</td><td class=num>{ep}</td>"
                         f"<td class=num>{_spread(g.stats('last'))}</td>"
                         f"<td class=num>{_spread(g.stats('best'))}</td></tr>")
        parts.append("</table>")

    parts.append("<h2>Config differences</h2>")
    diff = config_diff(runs)
    if len(runs) < 2:
        parts.append("<p class=muted>one run: nothing to compare</p>")
    elif not diff:
        parts.append("<p>The runs share every option.</p>")
    else:
        parts.append("<table><tr><th>option</th>" +
                     "".join(f"<th>{_esc(r.label)}</th>" for r in runs) + "</tr>")
        for key, values in diff:
            parts.append(f"<tr><td><code>{_esc(key)}</code></td>" +
                         "".join(_cell(v) for v in values) + "</tr>")
        parts.append("</table>")

    parts.append("<h2>Learning curves</h2>")
    curves = curves_png(runs)
    parts.append(f'<img alt="learning curves" src="data:image/png;base64,{curves}">' if curves
                 else "<p class=muted>no metrics to plot</p>")

    parts.append("<h2>Confusion matrices</h2>")
    figs = [(r, confusion_png(r)) for r in runs]
    if any(png for _, png in figs):
        parts.append("<p class=muted>Row-normalised (rows: true class), on each run's own "
                     "validation faces.</p><div class=grid>")
        for r, png in figs:
            if png:
                parts.append(f'<figure><img alt="confusion matrix {_esc(r.label)}" '
                             f'src="data:image/png;base64,{png}"></figure>')
        parts.append("</div>")
    else:
        parts.append("<p class=muted>Pass --data PATH to compute each run's confusion matrix "
                     "on its validation faces.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(paths: list[str | Path], out: str | Path = "report.html",
                 data: str | Path | Any | None = None, device: str = "auto",
                 title: str = "ferkit run comparison") -> tuple[Path, list[RunRecord]]:
    """Read the runs, render the page and write it to `out`."""
    runs = collect_runs(paths, data, device)
    page = render_html(runs, title)
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, runs


def format_summary(runs: list[RunRecord]) -> str:
    """A few plain lines for the terminal."""
    lines = []
    for r in summary_rows(runs):
        acc = "-" if r["best_val_acc"] is None else f"{r['best_val_acc']:.4f}"
        f1 = "" if r["macro_f1"] is None else f", macro-F1 {r['macro_f1']:.4f}"
        last = "-" if r["last_val_acc"] is None else f"{r['last_val_acc']:.4f}"
        lines.append(f"  {r['run']}: {r['model']}, {r['epochs']} epochs, val acc {last} last, "
                     f"{acc} best{f1}, {_fmt_seconds(r['train_seconds'])}")
    groups = seed_groups(runs)
    if any(len(g.runs) > 1 for g in groups):
        lines.append("over seeds (last epoch's val acc: mean +- sd (min-max)):")
        lines += [f"  {g.label}: {len(g.runs)} run{'s' if len(g.runs) > 1 else ''}, "
                  f"{_spread(g.stats('last'), '+-')}" for g in groups]
    return "\n".join(lines)


__all__ = ["RunRecord", "SeedGroup", "collect_runs", "config_diff", "confusion_png", "curves_png",
           "format_summary", "load_run", "recipe_rows", "render_html", "seed_groups",
           "summary_rows", "write_report"]

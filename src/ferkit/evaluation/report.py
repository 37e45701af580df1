"""`ferkit report RUN_DIR...`: one self-contained HTML page comparing training runs.

The page holds: the options that differ between the runs (config diff), a table (model,
parameters, epochs, last and best val accuracy, macro-F1 when an evaluation JSON is in the run
dir or --data is given, train time), the mean and spread over seeds of runs that share every
other option, the learning curves overlaid (val accuracy; train and val loss) and, with
--data, each run's confusion matrix on its own validation faces, side by side. Every
figure is a PNG embedded as base64, so the file can be mailed or attached as it is.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ModelError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
# Options that always differ between runs or only say where/how fast a run executed.
_DIFF_SKIP = ("out", "resume", "threads", "num_workers", "eval_batch_size")
# Measurements in config.json's execution record, not choices: they differ between any two runs.
_DIFF_SKIP_PREFIXES = ("execution.timed_images_per_s.", "execution.why")


@dataclass
class RunRecord:
    """What the report needs from one run directory."""

    path: Path
    label: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    checkpoint: Path | None
    n_parameters: int | None = None
    evaluation: dict[str, Any] | None = None  # an evaluation JSON found in the run dir
    evaluation_path: Path | None = None
    confusion: np.ndarray | None = None  # on the run's validation faces (with --data)
    val_macro_f1: float | None = None
    classes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))

    @property
    def best(self) -> dict[str, Any] | None:
        rows = [m for m in self.metrics if m.get("val_acc") is not None]
        return max(rows, key=lambda m: (m["val_acc"], -m.get("epoch", 0))) if rows else None

    @property
    def last(self) -> dict[str, Any] | None:
        """The last epoch: what a run delivers (its best epoch was chosen on val)."""
        rows = [m for m in self.metrics if m.get("val_acc") is not None]
        return rows[-1] if rows else None

    @property
    def epochs(self) -> int:
        return len(self.metrics)

    @property
    def train_seconds(self) -> float:
        return float(sum(m.get("epoch_seconds") or 0.0 for m in self.metrics))

    @property
    def macro_f1(self) -> tuple[float | None, str]:
        """(macro-F1, where it comes from): an evaluation JSON first, else --data on val."""
        if self.evaluation is not None and self.evaluation.get("macro_f1") is not None:
            split = self.evaluation.get("split") or "?"
            return float(self.evaluation["macro_f1"]), f"{split} ({self.evaluation_path.name})"
        if self.val_macro_f1 is not None:
            return self.val_macro_f1, "val (--data)"
        return None, ""


# ---------------------------------------------------------------------------------------------
# reading runs


def load_run(path: str | Path) -> RunRecord:
    """A run directory (config.json + metrics.jsonl, from `ferkit train` or `ferkit sweep`)."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such run directory")
    if not p.is_dir():
        raise ModelError(f"{p}: not a run directory (a file; give the folder `ferkit train` "
                         "wrote)")
    if not (p / CONFIG).is_file() and not (p / METRICS).is_file():
        raise ModelError(f"{p}: not a ferkit run directory (no {CONFIG} or {METRICS})")
    config: dict[str, Any] = {}
    if (p / CONFIG).is_file():
        try:
            config = json.loads((p / CONFIG).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{p / CONFIG}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ModelError(f"{p / CONFIG}: expected a JSON object")
    metrics = _read_metrics(p / METRICS)
    ckpt = next((p / n for n in ("best.pt", "last.pt") if (p / n).is_file()), None)
    run = RunRecord(p, p.name, config, metrics, ckpt)
    if not config:
        run.notes.append(f"no {CONFIG}")
    if not metrics:
        run.notes.append("no finished epoch in metrics.jsonl")
    run.evaluation_path, run.evaluation = _find_evaluation(p)
    return run


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: line {i} is not JSON ({exc})") from exc
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _find_evaluation(run_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """An evaluation JSON (`ferkit evaluate --out`/--json output) in the run dir or below it."""
    candidates = sorted(run_dir.glob("*.json")) + sorted(run_dir.glob("*/metrics.json")) + \
        sorted(run_dir.glob("*/*.json"))
    seen = set()
    for c in candidates:
        if c in seen or c.name == CONFIG:
            continue
        seen.add(c)
        try:
            data = json.loads(c.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "macro_f1" in data and "accuracy" in data:
            return c, data
    return None, None


def _labels(runs: list[RunRecord]) -> None:
    """Unique short labels: the folder name, with its parent when names repeat."""
    names = [r.path.name for r in runs]
    for r in runs:
        if names.count(r.path.name) > 1:
            r.label = f"{r.path.parent.name}/{r.path.name}"
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label} [{i + 1}]"


def _load_checkpoint_info(run: RunRecord, device: str, need_model: bool) -> Any:
    """Parameter count (always, when a checkpoint exists) and a Predictor when asked."""
    if run.checkpoint is None:
        run.notes.append("no best.pt/last.pt")
        return None
    from ferkit.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run.checkpoint)
    state = ckpt.get("state_dict") or {}
    run.classes = tuple(ckpt.get("classes") or ())
    run.n_parameters = int(sum(v.numel() for k, v in state.items()
                               if hasattr(v, "numel") and not _is_buffer(k)))
    if not need_model:
        return None
    from ferkit.models.predictor import Predictor

    try:
        return Predictor.load(run.checkpoint, device=device)
    except ModelError as exc:
        run.notes.append(f"model not loadable: {exc}")
        return None


def _is_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


def _val_faces(dataset: Any, config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """The run's own validation faces: its holdout slice, or the data's val split."""
    from ferkit.training.splits import split_train_val

    split = split_train_val(dataset, config.get("holdout"), int(config.get("holdout_seed") or 0),
                            0)
    return split.val_images, np.asarray(split.val_labels), split.val_source


def _confusion(run: RunRecord, predictor: Any, dataset: Any) -> None:
    from ferkit.evaluation.evaluate import map_labels
    from ferkit.evaluation.metrics import classification_metrics

    images, labels, source = _val_faces(dataset, run.config)
    classes = tuple(predictor.classes)
    y = map_labels(labels, classes, run.label)
    probs = predictor.predict_proba(images)
    m = classification_metrics(y, probs.argmax(axis=1), len(classes), classes)
    run.confusion = np.asarray(m["confusion_matrix"])
    run.val_macro_f1 = float(m["macro_f1"])
    run.classes = classes
    run.notes.append(f"confusion matrix: {len(y):,} {source} faces, accuracy "
                     f"{m['accuracy']:.4f}")


def collect_runs(paths: list[str | Path], data: str | Path | Any | None = None,
                 device: str = "auto") -> list[RunRecord]:
    """Read every run (errors name the bad one), with confusion matrices when data is given."""
    if not paths:
        raise ModelError("give at least one run directory")
    runs = [load_run(p) for p in paths]
    _labels(runs)
    dataset = None
    if data is not None:
        if isinstance(data, str | Path):
            from ferkit.data import load_dataset

            dataset = load_dataset(data)
        else:
            dataset = data
    for run in runs:
        predictor = _load_checkpoint_info(run, device, need_model=dataset is not None)
        if predictor is not None:
            _confusion(run, predictor, dataset)
    return runs


# ---------------------------------------------------------------------------------------------
# comparisons


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _options(run: RunRecord) -> dict[str, Any]:
    """The run's options, flattened, with those an older ferkit did not record at today's
    defaults (a run from before --sam was added is a run with sam=0), model arguments too."""
    from ferkit.training.config import TrainConfig

    if not run.config:
        return {}
    return {**_flatten(TrainConfig().to_dict()), **_flatten(_model_defaults(run.model)),
            **_flatten(run.config)}


def _recipe(run: RunRecord) -> dict[str, Any]:
    """The options that make the run's recipe, but its seed: runs that differ only in the seed
    (or in where and how fast they ran) are one recipe repeated. Which options are the recipe
    is training.config's to say (RuntimeOptions vs Recipe), as for --resume; an option this
    ferkit does not know counts as recipe."""
    from ferkit.training.config import EXECUTION_KEY, RETIRED_FIELDS, RUNTIME_FIELDS

    skip = {*RUNTIME_FIELDS, *RETIRED_FIELDS, EXECUTION_KEY, "seed"}
    return {k: v for k, v in _options(run).items() if k.split(".", 1)[0] not in skip}


def _model_defaults(model: str) -> dict[str, Any]:
    """{"model_kwargs": the keyword defaults of the model's factory} ({} for an unknown one)."""
    import inspect

    from ferkit.models.registry import get_entry

    try:
        factory = get_entry(model).factory
    except ModelError:  # a model this ferkit does not have: its runs compare as recorded
        return {}
    return {"model_kwargs": {n: p.default for n, p in inspect.signature(factory).parameters.items()
                             if p.default is not inspect.Parameter.empty
                             and n != "num_classes"}}


def _implied(key: str, recipe: dict[str, Any]) -> bool:
    """An aug_* value the recipe's --augment preset sets anyway: left out of its label."""
    from ferkit.training.config import PRESETS

    preset = PRESETS.get(recipe.get("augment"), {})
    return key in preset and recipe.get(key) == preset[key]


_MISSING = object()


def config_diff(runs: list[RunRecord]) -> list[tuple[str, list[Any]]]:
    """(option, value per run) for the options whose values differ (absent = missing)."""
    flat = [_options(r) for r in runs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    rows = []
    for key in keys:
        if key in _DIFF_SKIP or key.startswith(_DIFF_SKIP_PREFIXES):
            continue
        values = [f.get(key, _MISSING) for f in flat]
        if len({json.dumps(v, sort_keys=True, default=str) if v is not _MISSING else "\0"
                for v in values}) > 1:
            rows.append((key, values))
    return rows


def summary_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        best, last = r.best, r.last
        f1, f1_source = r.macro_f1
        rows.append({"run": r.label, "path": str(r.path), "model": r.model,
                     "parameters": r.n_parameters, "epochs": r.epochs,
                     "last_val_acc": last["val_acc"] if last else None,
                     "best_val_acc": best["val_acc"] if best else None,
                     "best_epoch": best.get("epoch") if best else None,
                     "macro_f1": f1, "macro_f1_source": f1_source,
                     "train_seconds": r.train_seconds})
    return rows


@dataclass
class SeedGroup:
    """Runs of one recipe (every option equal but the seed): the spread seeds give."""

    label: str
    runs: list[RunRecord]

    def stats(self, key: str) -> dict[str, float] | None:
        """Mean, sample standard deviation, min and max of `last` or `best` val accuracy."""
        values = [m["val_acc"] for r in self.runs if (m := getattr(r, key)) is not None]
        if not values:
            return None
        v = np.asarray(values, dtype=np.float64)
        return {"n": len(v), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1
                else 0.0, "min": float(v.min()), "max": float(v.max())}

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]

    @property
    def epochs(self) -> list[int]:
        """The epochs its runs finished (one value unless some are still running)."""
        return sorted({r.epochs for r in self.runs})


def seed_groups(runs: list[RunRecord]) -> list[SeedGroup]:
    """Group the runs by recipe, in order of first appearance; each group is labelled by the
    options that set it apart from the other groups ("all runs" when there is one group)."""
    by_key: dict[str, tuple[dict[str, Any], list[RunRecord]]] = {}
    for r in runs:
        recipe = _recipe(r)
        key = json.dumps(recipe, sort_keys=True, default=str)
        by_key.setdefault(key, (recipe, []))[1].append(r)
    recipes = [recipe for recipe, _ in by_key.values()]
    groups = [members for _, members in by_key.values()]
    differing = [k for k in dict.fromkeys(k for rec in recipes for k in rec)
                 if len({json.dumps(rec.get(k, "(absent)"), default=str) for rec in recipes}) > 1]
    out = []
    for g, rec in zip(groups, recipes, strict=True):
        label = ", ".join(f"{k}={_value(rec[k]) if k in rec else '(absent)'}"
                          for k in differing if not _implied(k, rec)) or "all runs"
        out.append(SeedGroup(label, g))
    return out


def recipe_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per recipe (see seed_groups): its runs, seeds, and last/best val accuracy stats."""
    return [{"recipe": g.label, "runs": [r.label for r in g.runs], "seeds": g.seeds,
             "epochs": g.epochs,
             "last_val_acc": g.stats("last"), "best_val_acc": g.stats("best")}
            for g in seed_groups(runs)]


# ---------------------------------------------------------------------------------------------
# figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curves_png(runs: list[RunRecord]) -> str | None:
    """Val accuracy | train (solid) and val (dashed) loss, one colour per run."""
    if not any(r.metrics for r in runs):
        return None
    plt = _pyplot()
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
    plt = _pyplot()
    cm = run.confusion
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)
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
    if v is _MISSING:
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


__all__ = ["RunRecord", "SeedGroup", "collect_runs", "config_diff", "load_run", "recipe_rows",
           "render_html", "seed_groups", "summary_rows", "write_report"]

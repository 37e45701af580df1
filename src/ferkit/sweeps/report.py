"""`ferkit sweep report`: a study's trials as a table, JSON and plots (matplotlib, no plotly).

Plots: `params.png`, the objective (best val accuracy) against each swept parameter, and
`history.png`, the optimisation history (each trial's value and the best so far).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ferkit.plotting import pyplot
from ferkit.sweeps.options import DEFAULT_RUNS
from ferkit.sweeps.storage import SweepError, load_optuna, normalize_storage, open_storage
from ferkit.sweeps.study import STUDY_ATTR

ROW_METRICS = ("epochs", "wall_seconds", "train_loss", "train_acc", "val_loss", "val_acc")


def study_names(storage: Any) -> list[str]:
    """Studies in the storage, oldest first."""
    optuna = load_optuna()
    summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    summaries.sort(key=lambda s: (s.datetime_start is not None, s.datetime_start or 0,
                                  s._study_id))
    return [s.study_name for s in summaries]


def load_study(storage_url: str, study: str | None = None) -> Any:
    """The named study, or the latest one (by start time) in the storage."""
    optuna = load_optuna()
    url = normalize_storage(storage_url)
    db = url.split(":///", 1)[1] if url.startswith("sqlite:///") else ""
    if db and db != ":memory:" and not Path(db.split("?", 1)[0]).exists():
        raise SweepError(f"--storage {url}: no such database file; run `ferkit sweep` first")
    storage = open_storage(url, heartbeat=False)
    names = study_names(storage)
    if not names:
        raise SweepError(f"--storage {url} holds no study; run `ferkit sweep` first")
    if study is None:
        study = names[-1]
    elif study not in names:
        raise SweepError(f"no study {study!r} in {url}; studies: {', '.join(names)}")
    return optuna.load_study(study_name=study, storage=storage)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per trial: number, state, params, value and the recorded user attrs."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower(),
                               "params": dict(t.params), "value": _clean(t.value)}
        for key in (*ROW_METRICS, "best_epoch", "train_seconds", "final_val_acc", "n_parameters",
                    "model", "run_dir", "error"):
            row[key] = _clean(attrs.get(key))
        if row["wall_seconds"] is None and t.datetime_start and t.datetime_complete:
            row["wall_seconds"] = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(row)
    return rows


def param_names(study: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Swept parameters in the space's order (from the study attribute), else first-seen order."""
    names: list[str] = []
    space = (study.user_attrs.get(STUDY_ATTR) or {}).get("space") or {}
    for key, spec in (space.get("params") or {}).items():
        if key == "model" and isinstance(spec, dict) and "type" not in spec:
            names += [f"model.{k}" for k in spec]
        else:
            names.append(key)
    for row in rows:
        names += [k for k in row["params"] if k not in names]
    return names


def report_dict(study: Any, storage_url: str) -> dict[str, Any]:
    rows = trial_rows(study)
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    attr = study.user_attrs.get(STUDY_ATTR) or {}
    return {"study": study.study_name, "storage": normalize_storage(storage_url),
            "objective": "best validation accuracy (maximised)",
            "space": attr.get("space"), "budget": attr.get("budget"),
            "params": param_names(study, rows), "best": best, "trials": rows}


def format_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the printed table."""
    names = report["params"]
    header = ["trial", "state", *names, "epochs", "time (s)", "train loss", "train acc",
              "val loss", "val acc"]
    cells = []
    for r in report["trials"]:
        cells.append([str(r["trial"]), r["state"], *(format_value(r["params"].get(n))
                                                     for n in names),
                      format_value(r["epochs"]),
                      "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}",
                      *(format_value(r[k]) for k in ("train_loss", "train_acc", "val_loss",
                                                     "val_acc"))])
    return header, cells


def plain_table(report: dict[str, Any]) -> str:
    header, cells = table_rows(report)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def markdown_table(report: dict[str, Any]) -> str:
    """The printed table as Markdown (numbers right-aligned), for a README or a paper's notes."""
    header, cells = table_rows(report)
    align = ["---" if h == "state" else "---:" for h in header]
    return "\n".join("| " + " | ".join(row) + " |" for row in [header, align, *cells])


# ---------------------------------------------------------------------------------------------
# plots




def _distribution(study: Any, name: str) -> Any:
    for t in study.get_trials(deepcopy=False):
        if name in t.distributions:
            return t.distributions[name]
    return None


def plot_params(study: Any, report: dict[str, Any], path: Path) -> Path | None:
    """Val accuracy against each parameter: one panel per parameter, pruned trials hollow."""
    optuna = load_optuna()
    names = report["params"]
    rows = [r for r in report["trials"] if r["val_acc"] is not None or r["value"] is not None]
    if not names or not rows:
        return None
    plt = pyplot()
    cols = min(len(names), 3)
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(6.0, 4.2 * cols), 3.4 * nrows),
                             squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        dist = _distribution(study, name)
        pts = [(r["params"].get(name), r["value"] if r["value"] is not None else r["val_acc"],
                r["state"]) for r in rows if name in r["params"]]
        categorical = isinstance(dist, optuna.distributions.CategoricalDistribution)
        if categorical:
            choices = list(dist.choices)
            xs = [choices.index(p) for p, _, _ in pts]
            ax.set_xticks(range(len(choices)), [str(c) for c in choices])
            ax.set_xlim(-0.5, len(choices) - 0.5)
        else:
            xs = [p for p, _, _ in pts]
            if getattr(dist, "log", False):
                ax.set_xscale("log")
        for (x, (_, y, state)) in zip(xs, pts, strict=True):
            done = state == "complete"
            ax.scatter([x], [y], s=36, color="C0" if done else "none",
                       edgecolors="C0" if done else "0.5", zorder=3)
        if categorical:  # mean per choice
            by: dict[int, list[float]] = {}
            for x, (_, y, state) in zip(xs, pts, strict=True):
                if state == "complete":
                    by.setdefault(x, []).append(y)
            if by:
                ks = sorted(by)
                ax.plot(ks, [sum(by[k]) / len(by[k]) for k in ks], color="C1", lw=1.2,
                        label="mean", zorder=2)
        ax.set_xlabel(name)
        ax.set_ylabel("best val accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{report['study']}: accuracy vs parameters (hollow = pruned)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(report: dict[str, Any], path: Path) -> Path | None:
    """Each trial's best val accuracy by trial number, and the best so far."""
    pts = [(r["trial"], r["value"] if r["value"] is not None else r["val_acc"], r["state"])
           for r in report["trials"]]
    pts = [p for p in pts if p[1] is not None]
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    done = [(n, v) for n, v, s in pts if s == "complete"]
    other = [(n, v) for n, v, s in pts if s != "complete"]
    if done:
        ax.scatter(*zip(*done, strict=True), color="C0", label="complete", zorder=3)
        best, xs, ys = -math.inf, [], []
        for n, v in sorted(done):
            best = max(best, v)
            xs.append(n)
            ys.append(best)
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    if other:
        ax.scatter(*zip(*other, strict=True), facecolors="none", edgecolors="0.5",
                   label="pruned / failed", zorder=3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("best val accuracy")
    ax.set_title(f"{report['study']}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(study: Any, report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """params.png, history.png and sweep.json in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for key, path in (("params", plot_params(study, report, out / "params.png")),
                      ("history", plot_history(report, out / "history.png"))):
        if path is not None:
            written[key] = path
    (out / "sweep.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    written["json"] = out / "sweep.json"
    return written


def default_out_dir(study: Any) -> Path:
    attr = study.user_attrs.get(STUDY_ATTR) or {}
    return Path(attr.get("runs") or DEFAULT_RUNS) / study.study_name / "report"

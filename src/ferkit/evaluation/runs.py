"""Reading training runs for a comparison: one RunRecord per run directory.

A record holds what `ferkit report` shows of a run: its options (config.json), its epochs
(metrics.jsonl, read by ferkit.training.run_dir), its checkpoint's parameter count, an
evaluation JSON found in the directory and, given data, its confusion matrix on the run's own
validation faces. Grouping and comparing records is ferkit.evaluation.compare's; the page is
ferkit.evaluation.report's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ModelError
from ferkit.run_files import BEST, CONFIG, LAST, METRICS
from ferkit.training.run_dir import read_metrics


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


def load_run(path: str | Path) -> RunRecord:
    """A run directory (its config and metrics files, from `ferkit train` or `ferkit sweep`)."""
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
    metrics = read_metrics(p)
    ckpt = next((p / n for n in (BEST, LAST) if (p / n).is_file()), None)
    run = RunRecord(p, p.name, config, metrics, ckpt)
    if not config:
        run.notes.append(f"no {CONFIG}")
    if not metrics:
        run.notes.append(f"no finished epoch in {METRICS}")
    run.evaluation_path, run.evaluation = _find_evaluation(p)
    return run


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
        run.notes.append(f"no {BEST}/{LAST}")
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


__all__ = ["RunRecord", "collect_runs", "load_run"]

"""Evaluate a model on one split of a dataset: predictions, metrics and the mistakes behind them.

    from ferkit.data import load_dataset
    from ferkit.evaluation.evaluate import evaluate
    from ferkit.models.predictor import Predictor

    report = evaluate(Predictor.load("runs/ferkit-vgg"), load_dataset("fer2013.zip"), tta="flip")
    print(report.accuracy, report.macro_f1, report.ece)
    report.to_dict()  # what `ferkit evaluate --json` prints
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkit.classes import CLASSES, class_index
from ferkit.errors import DataError, FerkitError, ModelError
from ferkit.evaluation.metrics import ECE_BINS, calibration_summary, classification_metrics
from ferkit.tta import check_tta

if TYPE_CHECKING:
    from ferkit.data.dataset import FaceDataset
    from ferkit.models.onnx_predictor import OnnxPredictor
    from ferkit.models.predictor import Predictor



@dataclass
class EvaluationReport:
    """The outcome of `evaluate`: metrics plus the raw predictions they were computed from.

    Class indices (``labels``, columns of ``probabilities``, rows/columns of
    ``confusion_matrix``, keys of ``per_class``) follow the *model's* class order, ``classes``.
    """

    accuracy: float
    macro_f1: float  # mean F1 over the classes present in the true labels
    per_class: dict[str, dict[str, float | int | None]]
    confusion_matrix: np.ndarray  # (C, C) int64, rows = true class, columns = predicted class
    n: int
    probabilities: np.ndarray  # (n, C) float32
    labels: np.ndarray  # (n,) int64 true labels, in the model's class order
    classes: tuple[str, ...] = CLASSES
    split: str = ""
    tta: str = "none"
    model: str = ""
    data: str = ""
    names: np.ndarray = field(default_factory=lambda: np.array([], dtype=object), repr=False)
    images: np.ndarray | None = field(default=None, repr=False)  # (n, 48, 48) uint8
    temperature: float = 1.0  # the model's calibration temperature, already in `probabilities`

    @property
    def predictions(self) -> np.ndarray:
        """(n,) predicted class indices."""
        return self.probabilities.argmax(axis=1)

    @property
    def scores(self) -> np.ndarray:
        """(n,) probability of the predicted class."""
        return self.probabilities.max(axis=1)

    @property
    def calibration(self) -> dict[str, Any]:
        """ece, bins, mean_confidence, accuracy and per-bin reliability of the top-class
        probabilities (ferkit.evaluation.metrics.calibration_summary, ECE_BINS bins)."""
        cached = self.__dict__.get("_calibration")
        if cached is None:
            cached = calibration_summary(self.probabilities, self.labels, ECE_BINS)
            self.__dict__["_calibration"] = cached
        return cached

    @property
    def ece(self) -> float:
        """Expected calibration error (ECE_BINS equal-width confidence bins)."""
        return self.calibration["ece"]

    @property
    def mean_confidence(self) -> float:
        """Mean top-class probability: against `accuracy`, over- or under-confidence."""
        return self.calibration["mean_confidence"]

    def mistakes(self, k: int | None = None) -> np.ndarray:
        """Indices of the wrongly classified faces, most confident first (at most k)."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        order = wrong[np.argsort(-self.scores[wrong], kind="stable")]
        return order if k is None else order[:k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: accuracy, macro_f1, ece, mean_confidence, per_class, confusion_matrix, n,
        calibration (bins, the model's temperature, per-bin count / confidence / accuracy), then
        context keys."""
        cal = self.calibration
        reliability = {k: [None if v is None else (round(v, 6) if isinstance(v, float) else v)
                           for v in values] for k, values in cal["reliability"].items()}
        out: dict[str, Any] = {
            "accuracy": round(self.accuracy, 6),
            "macro_f1": round(self.macro_f1, 6),
            "ece": round(cal["ece"], 6),
            "mean_confidence": round(cal["mean_confidence"], 6),
            "per_class": {
                name: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()}
                for name, entry in self.per_class.items()
            },
            "confusion_matrix": self.confusion_matrix.astype(int).tolist(),
            "n": self.n,
            "calibration": {"bins": cal["bins"], "temperature": round(float(self.temperature), 6),
                            **reliability},
            "classes": list(self.classes),
            "split": self.split,
            "tta": self.tta,
        }
        if self.model:
            out["model"] = self.model
        if self.data:
            out["data"] = self.data
        return out

    def to_json(self, **extra: Any) -> str:
        """to_dict() (plus `extra` keys) as indented JSON, each confusion-matrix row on one line."""
        return dumps({**self.to_dict(), **extra})

    def save(self, out_dir: str | Path, mistakes: int = 36) -> dict[str, Path]:
        """Write metrics.json, predictions.csv, confusion_matrix.png, reliability.png and
        mistakes.png to out_dir."""
        from ferkit.evaluation.plots import plot_confusion_matrix, plot_mistakes, plot_reliability

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"metrics": out / "metrics.json", "predictions": out / "predictions.csv"}
        files["metrics"].write_text(self.to_json() + "\n")
        with open(files["predictions"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "true", "predicted", "score",
                             *[f"p_{c}" for c in self.classes]])
            preds, scores = self.predictions, self.scores
            for i in range(self.n):
                name = self.names[i] if i < len(self.names) else i
                writer.writerow([name, self.classes[self.labels[i]], self.classes[preds[i]],
                                 f"{scores[i]:.4f}", *[f"{p:.4f}" for p in self.probabilities[i]]])
        files["confusion_matrix"] = plot_confusion_matrix(
            self.confusion_matrix, self.classes, self.caption, out / "confusion_matrix.png")
        files["reliability"] = plot_reliability(
            self.probabilities, self.labels, self.caption, out / "reliability.png",
            temperature=self.temperature)
        if self.images is not None:
            files["mistakes"] = plot_mistakes(self.images, self.labels, self.probabilities,
                                              list(self.names), self.classes, self.caption,
                                              out / "mistakes.png", k=mistakes)
        return files

    @property
    def caption(self) -> str:
        """One line for figure titles: model, split, TTA, accuracy, macro-F1, n."""
        parts = [Path(self.model).name if self.model else "",
                 f"split {self.split}" if self.split else "",
                 f"tta {self.tta}" if self.tta != "none" else "",
                 f"accuracy {self.accuracy:.4f}, macro-F1 {self.macro_f1:.4f}, n={self.n}"]
        return " | ".join(p for p in parts if p)


def dumps(obj: Any) -> str:
    """json.dumps(indent=2), but lists of plain numbers stay on one line."""
    text = json.dumps(obj, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(","))
                            + "]", text)


_ATOM = r"(?:-?[\d.eE+-]+|null)"  # a number, or null (an empty reliability bin)
_NUMBER_LIST = re.compile(rf"\[\s*({_ATOM}(?:,\s*{_ATOM})*)\s*\]")


def default_split(dataset: FaceDataset) -> str:
    """`test` if the dataset has one, else `val`, else its only split."""
    present = dataset.split_names
    if not present:
        raise DataError(f"{_source(dataset)}: the dataset holds no faces")
    for name in ("test", "val"):
        if name in present:
            return name
    return present[0]


def select_split(dataset: FaceDataset, split: str | None = None) -> tuple[str, FaceDataset]:
    """Name and faces of the split to evaluate; a missing split is an error naming the others."""
    name = default_split(dataset) if split is None else split
    present = dataset.split_names
    if name not in present:
        raise DataError(f"{_source(dataset)} has no split {name!r}; available splits: "
                        f"{', '.join(present) or 'none'}")
    return name, dataset.split(name)


def label_mapping(model_classes: tuple[str, ...] | list[str], model: str = "model") -> np.ndarray:
    """For each dataset label (CLASSES order), the index of the same class in the model, or -1.

    Model class names are matched by meaning, as folder names are: "happiness" or "3_happy"
    mean `happy`. Two model classes meaning the same expression are an error.
    """
    mapping = np.full(len(CLASSES), -1, dtype=np.int64)
    for j, name in enumerate(model_classes):
        ci = class_index(str(name))
        if ci is None:
            continue  # a class the datasets never hold (e.g. "contempt"): only ever a wrong guess
        if mapping[ci] >= 0:
            raise ModelError(f"{model}: classes {model_classes[mapping[ci]]!r} and {name!r} both "
                             f"mean {CLASSES[ci]!r}")
        mapping[ci] = j
    return mapping


def map_labels(labels: np.ndarray, model_classes: tuple[str, ...] | list[str],
               model: str = "model") -> np.ndarray:
    """Dataset labels (CLASSES order) -> the model's class indices; a class it lacks is an error."""
    mapping = label_mapping(model_classes, model)
    labels = np.asarray(labels, dtype=np.int64)
    present, counts = np.unique(labels, return_counts=True)
    missing = [f"{CLASSES[c]} ({k} faces)"
               for c, k in zip(present, counts, strict=True) if mapping[c] < 0]
    if missing:
        raise ModelError(f"{model} cannot classify {', '.join(missing)}: its classes are "
                         f"{', '.join(map(str, model_classes))}")
    return mapping[labels]


def load_predictor(model: str | Path, device: str = "auto") -> Predictor | OnnxPredictor:
    """The model to evaluate: a checkpoint ('default', a run directory, a .pt file) in PyTorch,
    or a `ferkit export` .onnx file in onnxruntime (the file a user ships, int8 included)."""
    from ferkit.models.onnx_predictor import OnnxPredictor, is_onnx_file
    from ferkit.models.predictor import Predictor

    if not is_onnx_file(model):
        return Predictor.load(model, device=device)
    if device not in ("auto", "cpu"):
        raise ModelError(f"{model}: an ONNX model runs on the CPU (onnxruntime): use --device "
                         "cpu or auto, or evaluate the checkpoint it was exported from")
    return OnnxPredictor.load(model)


def evaluate(predictor: Predictor | str | Path, dataset: FaceDataset | str | Path,
             split: str | None = None, tta: str = "none", batch_size: int = 256
             ) -> EvaluationReport:
    """Classify one split of `dataset` with `predictor` and compute the metrics.

    `predictor` may also be a checkpoint spec for Predictor.load (run dir, .pt, "default") or an
    exported .onnx file (see load_predictor), and `dataset` a path for load_dataset. `split`
    None picks test, else val, else the only split.
    `tta`: one of ferkit.tta.TTA_MODES (see TTA_DESCRIPTIONS there).
    """
    check_tta(tta)
    if batch_size < 1:
        raise FerkitError(f"batch size must be at least 1, got {batch_size}")
    if not hasattr(predictor, "predict_proba"):
        predictor = load_predictor(predictor)
    if isinstance(dataset, (str, Path)):
        from ferkit.data import load_dataset

        dataset = load_dataset(dataset)

    model_name = str(predictor.meta.get("path") or predictor.arch or "model")
    name, part = select_split(dataset, split)
    if len(part) == 0:
        raise DataError(f"{_source(dataset)}: split {name!r} is empty")
    labels = map_labels(part.labels, predictor.classes, model_name)
    probs = predictor.predict_proba(part.images, tta=tta, batch_size=batch_size)
    classes = tuple(predictor.classes)
    m = classification_metrics(labels, probs.argmax(axis=1), len(classes), classes)
    return EvaluationReport(
        accuracy=m["accuracy"], macro_f1=m["macro_f1"], per_class=m["per_class"],
        confusion_matrix=m["confusion_matrix"], n=m["n"], probabilities=probs, labels=labels,
        classes=classes, split=name, tta=tta, model=model_name, data=dataset.source,
        names=part.names, images=part.images,
        temperature=float(getattr(predictor, "temperature", 1.0)),
    )


def _source(dataset: FaceDataset) -> str:
    return dataset.source or "the dataset"

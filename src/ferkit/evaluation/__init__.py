"""Evaluation: metrics of a model on a dataset split, and figures of its errors.

    from ferkit.evaluation.evaluate import evaluate
    report = evaluate("runs/ferkit-vgg", "fer2013.zip", tta="flip")  # or a Predictor, FaceDataset
    report.accuracy, report.macro_f1, report.per_class, report.confusion_matrix, report.ece
    report.save("report/")  # metrics.json, predictions.csv, confusion_matrix.png,
                            # reliability.png, mistakes.png

(`evaluate` the function is deliberately not re-exported here: it would shadow the
`ferkit.evaluation.evaluate` module.)
"""

from ferkit.evaluation.evaluate import EvaluationReport
from ferkit.evaluation.metrics import classification_metrics, confusion_matrix

__all__ = ["EvaluationReport", "classification_metrics", "confusion_matrix"]

"""The run directory's file names, in one place below every layer that reads a run.

`ferkit train` writes a run directory with these files (ferkit.training.run_dir writes and reads
them); checkpoint loading, serving, evaluation and `ferkit report` find a run's files by these
names. A leaf module, importing nothing, so that ferkit.models can use it without importing the
training layer above it.
"""

from __future__ import annotations

CONFIG = "config.json"  # the run's options (TrainConfig.to_dict) and its execution record
METRICS = "metrics.jsonl"  # one JSON line per finished epoch (EpochMetrics.to_dict)
BEST = "best.pt"  # the checkpoint of the epoch with the best val accuracy
LAST = "last.pt"  # the last finished epoch, with the state --resume continues from
CURVES = "curves.png"  # the learning curves
MODEL = "model.pt"  # not a run's file: a folder that holds one model

# What a model given as a folder loads: the first of these the folder holds.
CHECKPOINTS = (BEST, LAST, MODEL)

__all__ = ["BEST", "CHECKPOINTS", "CONFIG", "CURVES", "LAST", "METRICS", "MODEL"]

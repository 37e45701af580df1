"""Training: `TrainConfig` (every option) and `train(config) -> TrainResult` (see trainer.py).

    from ferkit.training import TrainConfig, train
    result = train(TrainConfig(data="fer2013.zip", model="shallow-cnn", epochs=10))
"""

from ferkit.training.config import TrainConfig

__all__ = ["EpochMetrics", "TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    # Lazy: importing the config (e.g. for `ferkit train --help`) does not import torch.
    if name in ("train", "TrainResult", "EpochMetrics"):
        from ferkit.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'ferkit.training' has no attribute {name!r}")

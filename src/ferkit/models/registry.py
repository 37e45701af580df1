"""A name -> constructor registry, as in timm: `@register_model` on a function building a model."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ferkit.classes import NUM_CLASSES
from ferkit.errors import ModelError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    reported: str  # accuracy the original project reported, with its source; "" for ferkit's own
    description: str
    trainable: bool = True  # False: built from other checkpoints (the ensemble), not trained


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, reported: str = "", trainable: bool = True) -> Callable:
    """Register `factory(num_classes=7, **kwargs) -> nn.Module` under `name`.

    `trainable=False` marks an entry `ferkit train` and `ferkit models` leave out (it is built
    from trained checkpoints) but checkpoints name like any other.
    """

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        summary = inspect.cleandoc(factory.__doc__ or "").split("\n\n")[0]  # first paragraph
        _REGISTRY[name] = ModelEntry(name, factory, reported, " ".join(summary.split()), trainable)
        return factory

    return decorate


def _ensure_zoo_loaded() -> None:
    import ferkit.models.zoo  # noqa: F401  (importing registers every zoo file)


def list_models(include_untrainable: bool = False) -> list[ModelEntry]:
    """The registered architectures (by default only those `ferkit train` accepts)."""
    _ensure_zoo_loaded()
    return [e for e in _REGISTRY.values() if e.trainable or include_untrainable]


def get_entry(name: str) -> ModelEntry:
    _ensure_zoo_loaded()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ModelError(f"unknown model {name!r}; known models: {known}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
    """Build a fresh architecture mapping (B, 1, 48, 48) normalised faces to (B, num_classes)
    logits (ferkit.models.normalize.NormalizedModel puts the normalisation in front)."""
    return get_entry(name).factory(num_classes=num_classes, **kwargs)

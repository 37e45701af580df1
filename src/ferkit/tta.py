"""Test-time augmentation: the modes and their one check.

The views themselves are made by ferkit.models.inference.tta_views; the names live here, in a
module without torch, so that the CLI's help can list them without importing torch.
"""

from __future__ import annotations

from ferkit.errors import ConfigError

# mode -> what it averages the predictions over (for help texts)
TTA_DESCRIPTIONS: dict[str, str] = {
    "none": "the face as it is",
    "flip": "the face and its mirror image",
    "tencrop": "5 crops of the face padded by 4 px, each also mirrored",
}
TTA_MODES: tuple[str, ...] = tuple(TTA_DESCRIPTIONS)
TTA_METAVAR = "|".join(TTA_MODES)
_MODES_TEXT = [f"{m} ({d})" for m, d in TTA_DESCRIPTIONS.items()]
TTA_HELP = ("Test-time augmentation: the predictions averaged over the views of "
            + ", ".join(_MODES_TEXT[:-1]) + " or " + _MODES_TEXT[-1] + ".")


def check_tta(mode: str) -> str:
    """`mode` if it is a TTA mode, else a ConfigError (a ValueError too) naming the modes."""
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    return mode

"""The seven FER2013 expression classes, in label order, and the folder names that mean them."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASSES)
FACE_SIZE = 48  # FER2013 faces are FACE_SIZE x FACE_SIZE grey pixels; every model's input

# Folder names seen in public FER datasets (FER2013, FER+, RAF-DB, AffectNet, CK+ exports).
SYNONYMS: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "neutrality": "neutral",
    "calm": "neutral",
}


def class_index(name: str) -> int | None:
    """Label index for a class or folder name (case-insensitive, synonyms and '3_happy' allowed)."""
    key = name.strip().lower()
    if key.isdigit() and int(key) < NUM_CLASSES:
        return int(key)
    if key not in SYNONYMS and "_" in key:  # e.g. "3_happy" or "happy_faces"
        for part in key.split("_"):
            if part in SYNONYMS:
                key = part
                break
    canonical = SYNONYMS.get(key)
    return None if canonical is None else CLASSES.index(canonical)

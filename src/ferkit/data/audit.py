"""Data-quality audit: pixel-identical duplicates (within and across splits), duplicate groups
whose labels disagree, and blank (near-constant) images.

Duplicates are exact: two faces are duplicates when all 48x48 pixels are equal (a 128-bit
BLAKE2 digest of each face's bytes, grouped with np.unique). Blank faces (max - min <= 5 by
default) are reported on their own and also take part in the duplicate groups (the all-black
faces of FER2013 form one group); such groups are marked "blank".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ferkit.classes import CLASSES
from ferkit.data.dataset import SPLITS, FaceDataset

BLANK_MAX_RANGE = 5
EXAMPLE_GROUPS = 5
EXAMPLE_MEMBERS = 6


@dataclass
class AuditReport:
    source: str
    images: int
    splits: dict[str, int]
    duplicates: dict
    blank: dict
    skipped: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)  # loaded, but the decoder complained

    def to_dict(self) -> dict:
        return {"source": self.source, "images": self.images, "splits": self.splits,
                "duplicates": self.duplicates, "blank": self.blank, "skipped": self.skipped,
                "warnings": self.warnings}


def image_digests(images: np.ndarray) -> np.ndarray:
    """One 16-byte digest per face (fixed-width bytes array, so np.unique can group them)."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat],
                    dtype="S16")


def duplicate_groups(images: np.ndarray) -> list[np.ndarray]:
    """Index arrays of faces that are pixel-identical (groups of 2 or more), in index order."""
    if len(images) == 0:
        return []
    _, inverse, counts = np.unique(image_digests(images), return_inverse=True,
                                   return_counts=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    groups.sort(key=lambda g: int(g[0]))
    return groups


def _describe_group(ds: FaceDataset, idx: np.ndarray, blank: np.ndarray) -> dict:
    members = [{"name": str(ds.names[i]), "split": str(ds.splits[i]),
                "label": CLASSES[int(ds.labels[i])]} for i in idx[:EXAMPLE_MEMBERS]]
    return {"size": int(len(idx)), "blank": bool(blank[idx[0]]),
            "labels": sorted({CLASSES[int(v)] for v in ds.labels[idx]}),
            "splits": [s for s in SPLITS if s in set(ds.splits[idx].tolist())],
            "members": members}


def _examples(ds, groups, blank) -> list[dict]:
    # Largest groups first, then non-blank before blank, then source order.
    ranked = sorted(groups, key=lambda g: (bool(blank[g[0]]), -len(g), int(g[0])))
    return [_describe_group(ds, g, blank) for g in ranked[:EXAMPLE_GROUPS]]


def audit(ds: FaceDataset, blank_max_range: int = BLANK_MAX_RANGE) -> AuditReport:
    """Find exact duplicates, cross-split leakage, conflicting labels and blank faces."""
    n = len(ds)
    flat = ds.images.reshape(n, -1)
    value_range = (flat.max(1).astype(np.int16) - flat.min(1)) if n else np.zeros(0, np.int16)
    blank = value_range <= blank_max_range
    groups = duplicate_groups(ds.images)
    present = ds.split_names

    within: dict[str, dict] = {}
    within_groups: list[np.ndarray] = []
    for s in present:
        gs = [g[ds.splits[g] == s] for g in groups]
        gs = [g for g in gs if len(g) > 1]
        within[s] = {"groups": len(gs), "images": int(sum(len(g) for g in gs)),
                     "redundant": int(sum(len(g) - 1 for g in gs))}
        within_groups.extend(gs)

    across = [g for g in groups if len(set(ds.splits[g].tolist())) > 1]
    pairs = {}
    for a, b in combinations(present, 2):
        pairs[f"{a}-{b}"] = sum(1 for g in across if {a, b} <= set(ds.splits[g].tolist()))
    # Faces of a later split whose exact copy is in an earlier one (e.g. val faces seen in train).
    leaked = {}
    for k, s in enumerate(present[1:], start=1):
        earlier = set(present[:k])
        leaked[s] = int(sum(int((ds.splits[g] == s).sum()) for g in across
                            if earlier & set(ds.splits[g].tolist())))
    conflicting = [g for g in groups if len(set(ds.labels[g].tolist())) > 1]

    duplicates = {
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "redundant": int(sum(len(g) - 1 for g in groups)),
        "blank_groups": int(sum(1 for g in groups if blank[g[0]])),
        "within_split": within,
        "across_splits": {
            "groups": len(across),
            "images": int(sum(len(g) for g in across)),
            "pairs": pairs,
            "leaked": leaked,
        },
        "conflicting_labels": {
            "groups": len(conflicting),
            "images": int(sum(len(g) for g in conflicting)),
            "across_splits": int(sum(1 for g in conflicting
                                     if len(set(ds.splits[g].tolist())) > 1)),
        },
        "examples": {
            "within_split": _examples(ds, within_groups, blank),
            "across_splits": _examples(ds, across, blank),
            "conflicting_labels": _examples(ds, conflicting, blank),
        },
    }
    blank_idx = np.flatnonzero(blank)
    blank_report = {
        "max_range": int(blank_max_range),
        "count": int(len(blank_idx)),
        "per_split": {s: int((ds.splits[blank_idx] == s).sum()) for s in present},
        "examples": [{"name": str(ds.names[i]), "split": str(ds.splits[i]),
                      "label": CLASSES[int(ds.labels[i])], "min": int(flat[i].min()),
                      "max": int(flat[i].max())} for i in blank_idx[:10]],
    }
    return AuditReport(
        source=ds.source, images=n,
        splits={s: int((ds.splits == s).sum()) for s in present},
        duplicates=duplicates, blank=blank_report,
        skipped=[{"entry": s.entry, "reason": s.reason} for s in ds.skipped],
        warnings=[{"entry": w.entry, "message": w.message} for w in ds.warnings])

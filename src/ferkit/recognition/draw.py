"""Pictures of results: boxes and labels on images and frames, the demo figure, video timelines."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ferkit.classes import CLASSES
from ferkit.images import DecodedImage
from ferkit.recognition.face import Face

# One colour per expression (RGB), readable on photos; also used by the plots.
EXPRESSION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (220, 40, 40),
    "disgust": (120, 160, 30),
    "fear": (150, 80, 200),
    "happy": (255, 190, 0),
    "sad": (40, 110, 220),
    "surprise": (255, 110, 180),
    "neutral": (170, 170, 170),
}


def color_of(expression: str) -> tuple[int, int, int]:
    return EXPRESSION_COLORS.get(expression, (0, 220, 120))


def _mpl_color(expression: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in color_of(expression))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow >= 10.1)
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def face_label(face: Face) -> str:
    """'happy 0.91', '#2 happy 0.91' on a tracked face: the smoothed label where there is one,
    so a video's labels do not flicker from frame to frame."""
    label = f"{face.shown_expression} {face.shown_score:.2f}"
    if face.track is not None:
        label = f"#{face.track} {label}"
    if face.flags:
        label += " (" + ", ".join(face.flags) + ")"
    return label


def _pixels(picture: np.ndarray | DecodedImage) -> tuple[np.ndarray, float]:
    """The RGB array to draw on and the factor from box (original) coordinates to it."""
    if isinstance(picture, DecodedImage):
        return picture.array, 1.0 / picture.scale
    return picture, 1.0


def annotate(picture: np.ndarray | DecodedImage, faces: Sequence[Face],
             extra_text: str | None = None) -> np.ndarray:
    """Copy of an RGB image with each face's box, expression and score drawn on it (the
    smoothed expression and the track id where tracking set them, see face_label).

    picture: an RGB array the boxes refer to, or a DecodedImage (boxes in its original
        coordinates are drawn on its possibly downscaled array).
    extra_text: a line drawn in the top-left corner (e.g. "12.3 FPS").
    """
    rgb, scale = _pixels(picture)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(image)
    short = min(image.size)
    thickness = max(2, round(short / 250))
    font = _font(max(12, round(short / 28)))
    for face in faces:
        x, y, w, h = (v * scale for v in face.box)
        color = color_of(face.shown_expression)
        draw.rectangle([x, y, x + w, y + h], outline=color, width=thickness)
        text = face_label(face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        pad = max(2, th // 5)
        ty = y - th - 2 * pad if y - th - 2 * pad >= 0 else y + h  # above the box, else below
        tx = min(max(0, x), max(0, image.width - tw - 2 * pad))
        draw.rectangle([tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad], fill=color)
        draw.text((tx + pad - left, ty + pad - top), text, fill=(0, 0, 0), font=font)
    if extra_text:
        left, top, right, bottom = draw.textbbox((0, 0), extra_text, font=font)
        draw.rectangle([0, 0, right - left + 8, bottom - top + 8], fill=(0, 0, 0))
        draw.text((4 - left, 4 - top), extra_text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def save_image(rgb: np.ndarray, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rgb)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=90)
    else:
        image.save(path)
    return path


def _face_panels(fig, cells, faces: Sequence[Face], classes: Sequence[str]) -> None:
    """For each face, in its grid cell: the 48x48 crop the model saw and the 7 probabilities."""
    for i, (cell, face) in enumerate(zip(cells, faces, strict=True)):
        sub = cell.subgridspec(1, 2, width_ratios=[1.0, 1.9], wspace=0.55)
        ax_crop = fig.add_subplot(sub[0])
        if face.crop is not None:
            ax_crop.imshow(face.crop, cmap="gray", vmin=0, vmax=255)
        ax_crop.set_xticks([])
        ax_crop.set_yticks([])
        ax_crop.set_title(f"face {i + 1}", fontsize=9)
        ax_bar = fig.add_subplot(sub[1])
        probs = [float(face.probabilities.get(c, 0.0)) for c in classes]
        ax_bar.barh(range(len(classes)), probs, color=[_mpl_color(c) for c in classes])
        for j, p in enumerate(probs):
            ax_bar.text(min(p + 0.02, 0.8), j, f"{p:.2f}", va="center", fontsize=7)
        ax_bar.set_yticks(range(len(classes)), classes, fontsize=8)
        ax_bar.tick_params(axis="y", length=0, pad=2)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xticks([])
        for side in ("top", "right", "bottom"):
            ax_bar.spines[side].set_visible(False)
        flags = f" [{', '.join(face.flags)}]" if face.flags else ""
        ax_bar.set_title(f"{face.expression} {face.score:.2f}{flags}", fontsize=9,
                         color="black")


def demo_figure(picture: np.ndarray | DecodedImage, faces: Sequence[Face], path: Path,
                classes: Sequence[str] = CLASSES, title: str = "") -> Path:
    """The photo with boxes | per face: the 48x48 crop the model saw and its 7 probabilities.

    Wide photos get the faces in a row below the photo, others a column beside it.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    rgb, _ = _pixels(picture)
    h, w = rgb.shape[:2]
    n = len(faces)
    wide = w / h > 1.6
    if wide:
        cols = min(max(n, 1), 4)
        rows = max(1, -(-n // cols))
        fig_w = 3.6 * cols if cols > 2 else 8.0
        photo_h = 1.12 * fig_w * h / w
        fig = Figure(figsize=(fig_w, photo_h + 1.95 * rows + 0.5), dpi=110)
        grid = fig.add_gridspec(1 + rows, cols, height_ratios=[photo_h] + [1.95] * rows,
                                hspace=0.25, wspace=0.2, left=0.02, right=0.98)
        ax = fig.add_subplot(grid[0, :])
        cells = [grid[1 + i // cols, i % cols] for i in range(n)]
    else:
        photo_w = 6.0
        fig_h = max(photo_w * h / w, 1.7 * n)
        fig = Figure(figsize=(photo_w + 4.2, fig_h + 0.5), dpi=110)
        grid = fig.add_gridspec(max(n, 1), 2, width_ratios=[photo_w, 4.2], hspace=0.45,
                                wspace=0.1)
        ax = fig.add_subplot(grid[:, 0])
        cells = [grid[i, 1] for i in range(n)]
    ax.imshow(annotate(picture, faces))
    ax.set_axis_off()
    ax.set_title(title or f"{n} face(s)", fontsize=11)
    if not faces:
        ax.text(0.5, -0.04, "no face found", transform=ax.transAxes, ha="center", va="top",
                fontsize=11)
    _face_panels(fig, cells, faces, classes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def timeline_plot(times: np.ndarray, probs: np.ndarray, path: Path,
                  classes: Sequence[str] = CLASSES, title: str = "") -> Path:
    """Expression probabilities of the largest face per frame over time (NaN = no face)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=110)
    ax = fig.add_subplot()
    for j, name in enumerate(classes):
        ax.plot(times, probs[:, j] if len(probs) else [], label=name, color=_mpl_color(name),
                linewidth=1.6, marker="." if len(times) < 60 else None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    if len(times):
        ax.set_xlim(float(np.min(times)), max(float(np.max(times)), float(np.min(times)) + 1e-3))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title or "expression of the largest face per frame", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


# Rows of the per-track timeline: the longest tracks; the others are counted in the title.
MAX_TIMELINE_ROWS = 8


def track_timeline_plot(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
                        path: Path, classes: Sequence[str] = CLASSES, title: str = "",
                        duration: float | None = None) -> Path:
    """One row per tracked face: its smoothed probabilities over time (solid) over the raw
    per-frame ones (thin, faint), on one shared time axis.

    rows: (label, times, raw (N, C), smoothed (N, C) or None) per track; gaps between
        sightings are drawn as gaps (pass NaN rows where the face was not seen).
    duration: the video's length in seconds, for the shared x axis.

    The rows are bands of one Axes, not an Axes each: matplotlib's per-Axes setup (ticks,
    labels) made a figure of four rows cost 1.5x the largest-face plot it replaces (measured),
    and it is written for every video.
    """
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    n = max(1, len(rows))
    gap = 0.4  # between bands, in probability units: room for each band's title
    height = 0.9 + 1.3 * n  # inches: the bands, the title above and the time axis below
    fig = Figure(figsize=(10, height), dpi=100)
    # Margins set by hand: bbox_inches="tight" draws the figure twice.
    fig.subplots_adjust(left=0.07, right=0.86, top=1 - 0.45 / height, bottom=0.45 / height)
    ax = fig.add_subplot()
    left = blended_transform_factory(ax.transAxes, ax.transData)
    ticks: list[float] = []
    for r, (label, times, raw, smooth) in enumerate(rows):
        base = (n - 1 - r) * (1 + gap)
        for j, name in enumerate(classes):
            color = _mpl_color(name)
            if smooth is not None:
                ax.plot(times, raw[:, j] + base, color=color, linewidth=0.8, alpha=0.35)
                ax.plot(times, smooth[:, j] + base, color=color, linewidth=1.6,
                        label=name if r == 0 else None)
            else:
                ax.plot(times, raw[:, j] + base, color=color, linewidth=1.6,
                        label=name if r == 0 else None)
        ax.axhline(base, color="0.6", linewidth=0.6)
        ax.axhline(base + 1, color="0.85", linewidth=0.6)
        ax.text(0.0, base + 1.04, label, transform=left, fontsize=9, va="bottom")
        ticks += [base, base + 0.5, base + 1]
    ax.set_yticks(ticks, ["0", "0.5", "1"] * len(rows), fontsize=8)
    ax.set_ylim(-0.05, n * (1 + gap) - gap / 2)
    ax.set_xlim(0, max(duration or max((float(np.nanmax(t)) for _, t, _, _ in rows if len(t)),
                                       default=1.0), 1e-3))
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if rows:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no face found", transform=ax.transAxes, ha="center", va="center",
                fontsize=11)
    ax.set_title(title or "expression per tracked face", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

"""Face recall and time of YuNet against the size of the copy it detects on.

    .venv/bin/python bench/detect_size.py                 # 640x480 .. 4032x3024 group photos
    .venv/bin/python bench/detect_size.py --sizes 1280,640,480

Group photos are composed from the faces of ferkit's public-domain sample photo
(src/ferkit/assets/sample.jpg, see NOTICE.md): each face, cut with a margin, is pasted at
widths from 20 px up to a quarter of the canvas, several to a canvas, on canvases of 640x480,
1920x1080 and 4032x3024; a second set mixes sizes on one canvas (one large face beside small
ones, the case a single shrunk pass handles worst). A pasted face counts as found when a
detection overlaps it with IoU >= 0.4. Rows: one pass at each --sizes (`Detector.detect_size`,
finer pass off; 1280 was ferkit's default before 2026-12-02), and `Recognizer.detect` as it
ships (DETECT_SIZE with the finer pass, after the Recognizer's own decode-size shrink), given
the canvas as an array and as a JPEG file (`+finer jpg`: quality 92, written beforehand, read
at libjpeg's reduced scales as a phone photo is; the time includes the read). The table shows
recall per face width and the median milliseconds per canvas.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

CANVASES = ((640, 480), (1920, 1080), (4032, 3024))
FACE_WIDTHS = (20, 28, 40, 56, 80, 120, 180, 260)


def source_faces() -> list[np.ndarray]:
    """RGB crops (face box x1.8) of the faces YuNet finds at full size in the sample photo."""
    from PIL import Image

    from ferkit.recognition.detector import YuNetDetector
    from ferkit.recognition.samples import SAMPLE_PHOTO

    rgb = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB"))
    crops = []
    for d in YuNetDetector(detect_size=0).detect(rgb):
        x, y, w, h = d.box
        cx, cy, side = x + w / 2, y + h / 2, 1.8 * max(w, h)
        x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
        crops.append(rgb[y0:int(cy + side / 2), x0:int(cx + side / 2)].copy())
    return crops


def compose_mixed(canvas: tuple[int, int], faces: list[np.ndarray], rng
                  ) -> tuple[np.ndarray, list[tuple[float, float, float, float]], list[int]]:
    """One large face (a quarter of the canvas width) and a row of small ones of every width
    up to 80 px; the boxes and each face's width."""
    cw, ch = canvas
    img = np.full((ch, cw, 3), 128, np.uint8)
    boxes, widths = [], []
    x = 10
    for i, width in enumerate([cw // 4] + [w for w in FACE_WIDTHS if w <= 80]):
        side = int(width * 1.8)
        if side >= ch or x + side >= cw:
            break
        y = 10 if i == 0 else int(rng.integers(0, ch - side))
        img[y:y + side, x:x + side] = cv2.resize(faces[i % len(faces)], (side, side),
                                                 interpolation=cv2.INTER_AREA)
        inner = side / 1.8
        boxes.append((x + (side - inner) / 2, y + (side - inner) / 2, inner, inner))
        widths.append(width)
        x += side + 10
    return img, boxes, widths


def compose(canvas: tuple[int, int], faces: list[np.ndarray], width: int, rng
            ) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A grey canvas with up to 6 pasted faces of about `width` px; their boxes (x, y, w, h)."""
    cw, ch = canvas
    img = np.full((ch, cw, 3), 128, np.uint8)
    boxes = []
    side = int(width * 1.8)
    if side >= min(cw, ch):
        return img, boxes
    cols = max(1, min(3, cw // (side + 10)))
    rows = max(1, min(2, ch // (side + 10)))
    for i in range(rows * cols):
        face = faces[i % len(faces)]
        patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        gx, gy = (i % cols) * (cw // cols), (i // cols) * (ch // rows)
        x = gx + int(rng.integers(0, max(1, cw // cols - side)))
        y = gy + int(rng.integers(0, max(1, ch // rows - side)))
        img[y:y + side, x:x + side] = patch
        inner = side / 1.8
        boxes.append((x + (side - inner) / 2, y + (side - inner) / 2, inner, inner))
    return img, boxes


def recall_row(label: str, detect, scenes, mixed) -> None:
    """Print one row per canvas: median ms per photo and recall per face width."""
    from ferkit.recognition.detector import iou

    for canvas in CANVASES:
        times, hits, totals = [], {}, {}
        photos = [(img, boxes, [w] * len(boxes)) for c, w, img, boxes in scenes
                  if c == canvas and boxes] + [m for c, *m in mixed if c == canvas]
        for img, boxes, widths in photos:
            t0 = time.perf_counter()
            found = detect(img)
            times.append(time.perf_counter() - t0)
            for box, width in zip(boxes, widths, strict=True):
                totals[width] = totals.get(width, 0) + 1
                hits[width] = hits.get(width, 0) + any(iou(box, d.box) >= 0.4 for d in found)
        cells = "  ".join(f"{hits[w] / totals[w]:>6.0%}" if w in totals else f"{'-':>6}"
                          for w in FACE_WIDTHS)
        print(f"{label:>13} {canvas[0]}x{canvas[1]:<5} "
              f"{statistics.median(times) * 1e3:>8.1f}  {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--sizes", default="1280,960,800,640,480",
                        help="comma-separated longest sides given to the detector")
    parser.add_argument("--finer", default="",
                        help="also time the Recognizer with the finer pass at these detect sizes")
    args = parser.parse_args()
    import torch

    from ferkit.recognition.detector import YuNetDetector
    from ferkit.recognition.recognizer import Recognizer
    from ferkit.recognition.sizes import DETECT_SIZE

    cv2.setNumThreads(2)
    torch.set_num_threads(2)
    faces = source_faces()
    rng = np.random.default_rng(0)
    scenes = [(c, w, *compose(c, faces, w, rng)) for c in CANVASES for w in FACE_WIDTHS
              if w * 1.8 < min(c) and w <= c[0] // 4]
    mixed = [(c, *compose_mixed(c, faces, rng)) for c in CANVASES]
    print(f"{len(faces)} source faces from the sample photo; {len(scenes)} group photos of "
          f"one face size, {len(mixed)} of mixed sizes; OpenCV {cv2.__version__}; "
          f"{torch.get_num_threads()} threads")
    print(f"{'detect at':>13} {'canvas':>10} {'ms/photo':>9}  " + "  ".join(
        f"{w:>4}px" for w in FACE_WIDTHS))
    for size in (int(s) for s in args.sizes.split(",")):
        recall_row(f"{size}", YuNetDetector(detect_size=size, finer_pass=False).detect,
                   scenes, mixed)
    finer_sizes = sorted({DETECT_SIZE, *(int(s) for s in args.finer.split(",") if s)})
    for size in finer_sizes:
        recall_row(f"{size}+finer", Recognizer(detect_size=size).detect, scenes, mixed)
    with tempfile.TemporaryDirectory() as tmp:
        files = as_jpeg_files([s[2] for s in scenes] + [m[1] for m in mixed], Path(tmp))
        for size in finer_sizes:
            detect = Recognizer(detect_size=size).detect
            recall_row(f"{size}+finer jpg", lambda img, d=detect: d(files[id(img)]),
                       scenes, mixed)


def as_jpeg_files(images: list[np.ndarray], folder: Path) -> dict[int, Path]:
    """Each image written once as a JPEG file in `folder` (before any timing), keyed by id()."""
    from PIL import Image

    files = {}
    for i, img in enumerate(images):
        files[id(img)] = folder / f"{i}.jpg"
        Image.fromarray(img).save(files[id(img)], quality=92)
    return files


if __name__ == "__main__":
    main()

"""Face recall and time of YuNet against the size of the copy it detects on.

    .venv/bin/python bench/detect_size.py                 # 640x480 .. 4032x3024 group photos
    .venv/bin/python bench/detect_size.py --sizes 1280,640,480

Group photos are composed from the faces of ferkit's public-domain sample photo
(src/ferkit/assets/sample.jpg, see NOTICE.md): each face, cut with a margin, is pasted at
widths from 20 px up to a quarter of the canvas, several to a canvas, on canvases of 640x480,
1920x1080 and 4032x3024. A pasted face counts as found when a detection overlaps it with
IoU >= 0.4. For each longest side given to the detector (`Detector.max_side`), the table shows
recall per face width and the median milliseconds per canvas.
"""

from __future__ import annotations

import argparse
import statistics
import time

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
    for d in YuNetDetector(max_side=10_000).detect(rgb):
        x, y, w, h = d.box
        cx, cy, side = x + w / 2, y + h / 2, 1.8 * max(w, h)
        x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
        crops.append(rgb[y0:int(cy + side / 2), x0:int(cx + side / 2)].copy())
    return crops


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


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / max(aw * ah + bw * bh - inter, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--sizes", default="1280,960,800,640,480",
                        help="comma-separated longest sides given to the detector")
    args = parser.parse_args()
    import torch

    from ferkit.recognition.detector import YuNetDetector

    cv2.setNumThreads(2)
    torch.set_num_threads(2)
    faces = source_faces()
    rng = np.random.default_rng(0)
    scenes = [(c, w, *compose(c, faces, w, rng)) for c in CANVASES for w in FACE_WIDTHS
              if w * 1.8 < min(c) and w <= c[0] // 4]
    print(f"{len(faces)} source faces from the sample photo; {len(scenes)} group photos; "
          f"OpenCV {cv2.__version__}")
    header = f"{'max_side':>8} {'canvas':>10} {'ms/photo':>9}  " + "  ".join(
        f"{w:>4}px" for w in FACE_WIDTHS)
    print(header)
    for max_side in (int(s) for s in args.sizes.split(",")):
        detector = YuNetDetector(max_side=max_side)
        for canvas in CANVASES:
            times, recall = [], {}
            for c, width, img, boxes in scenes:
                if c != canvas or not boxes:
                    continue
                t0 = time.perf_counter()
                found = detector.detect(img)
                times.append(time.perf_counter() - t0)
                hits = sum(any(iou(b, d.box) >= 0.4 for d in found) for b in boxes)
                recall[width] = hits / len(boxes)
            cells = "  ".join(f"{recall[w]:>6.0%}" if w in recall else f"{'-':>6}"
                              for w in FACE_WIDTHS)
            print(f"{max_side:>8} {canvas[0]}x{canvas[1]:<5} "
                  f"{statistics.median(times) * 1e3:>8.1f}  {cells}", flush=True)


if __name__ == "__main__":
    main()

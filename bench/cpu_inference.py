"""CPU inference benchmark: classifying 48x48 faces, and detecting faces in 640x480 images.

    .venv/bin/python bench/cpu_inference.py                       # the bundled model
    .venv/bin/python bench/cpu_inference.py --model runs/vgg-gap   # a run dir or checkpoint
    .venv/bin/python bench/cpu_inference.py --arch shallow-cnn     # an untrained zoo model

Measures, with torch.set_num_threads(--threads) (default 2, the size of a small server):
- faces/s at batch --batch (default 256) through Predictor.predict_proba (normalisation,
  forward pass and softmax included, as `ferkit predict` runs it);
- faces/s one face at a time (latency-bound, as in a live webcam with one face);
- detection: milliseconds per 640x480 image with YuNet (the sample photo resized), for each
  engine: onnxruntime (the default where the onnx extra is installed), PyTorch, and the
  yuface wheel's own C library;
- the whole pipeline (read-in-memory, detect, align, classify) on the 3-face sample photo.

Each figure is the best of --repeats timed runs after a warm-up: on a shared machine the best
run is the one least disturbed by other processes. Detection also shows the process CPU time
per image, which other processes disturb less than wall-clock time. Target for the bundled
model: >= 2,000 faces/s at batch 256 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def best_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def load_predictor(args):
    from ferkit.classes import CLASSES
    from ferkit.models.normalize import normalized
    from ferkit.models.predictor import Predictor
    from ferkit.models.registry import create_model

    if args.arch:
        model = normalized(create_model(args.arch), 0.5, 0.25).eval()
        return Predictor(model, CLASSES, torch.device("cpu"), args.arch,
                         {"path": f"untrained {args.arch}"})
    return Predictor.load(args.model, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default",
                        help="'default' (bundled), a run directory or a checkpoint file")
    parser.add_argument("--arch", default=None,
                        help="benchmark an untrained zoo architecture instead of --model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--single", type=int, default=200,
                        help="faces classified one at a time per timed run")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import cv2

    cv2.setNumThreads(args.threads)
    from ferkit.models.onnx_predictor import has_onnx_extra
    from ferkit.recognition.detector import LibfacedetectionDetector, YuNetDetector
    from ferkit.recognition.images import read_image
    from ferkit.recognition.recognizer import Recognizer
    from ferkit.recognition.samples import sample_photo

    predictor = load_predictor(args)
    n_params = sum(p.numel() for p in predictor.model.parameters())
    print(f"device: cpu ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs visible)")
    print(f"threads: torch {torch.get_num_threads()}, opencv {cv2.getNumThreads()}")
    print(f"torch {torch.__version__}, opencv {cv2.__version__}, numpy {np.__version__}")
    print(f"model: {predictor.arch} ({predictor.meta.get('path')}), "
          f"{n_params / 1e6:.2f} M parameters")

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (args.batch, 48, 48), dtype=np.uint8)
    t = best_time(lambda: predictor.predict_proba(faces, batch_size=args.batch), args.repeats)
    print(f"classify, batch {args.batch}: {args.batch / t:,.0f} faces/s "
          f"({t * 1000:.1f} ms per batch)")

    singles = faces[: min(args.single, len(faces))]
    t1 = best_time(lambda: [predictor.predict_proba(f[None], batch_size=1) for f in singles],
                   max(1, args.repeats // 3), warmup=1)
    print(f"classify, one at a time: {len(singles) / t1:,.0f} faces/s "
          f"({t1 / len(singles) * 1000:.2f} ms per face)")

    photo = read_image(sample_photo()).array
    vga = np.ascontiguousarray(cv2.resize(photo, (640, 480), interpolation=cv2.INTER_AREA))
    engines = {"onnxruntime": YuNetDetector(0.5, engine="onnxruntime"),
               "PyTorch": YuNetDetector(0.5, engine="torch"),
               "the yuface wheel's C library": LibfacedetectionDetector(0.5)}
    if not has_onnx_extra():
        del engines["onnxruntime"]
    for engine, detector in engines.items():
        td = best_time(lambda d=detector: d.detect(vga), args.repeats)
        cpu_start = time.process_time()
        n_found = len(detector.detect(vga))
        cpu = time.process_time() - cpu_start
        print(f"detect (YuNet, {engine}), 640x480: {td * 1000:.1f} ms per image, "
              f"{cpu * 1000:.0f} ms CPU ({n_found} faces found)")

    rec = Recognizer(model=predictor)
    h, w = photo.shape[:2]
    tp = best_time(lambda: rec.predict(photo), max(1, args.repeats // 2))
    print(f"full pipeline, {w}x{h} sample photo ({len(rec.predict(photo))} faces): "
          f"{tp * 1000:.1f} ms per image")


if __name__ == "__main__":
    main()

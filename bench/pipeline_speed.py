"""Recognition speed on the CPU, old and new paths side by side: photos, folders, videos, faces.

    .venv/bin/python bench/pipeline_speed.py                 # the bundled model, 2 threads
    .venv/bin/python bench/pipeline_speed.py --model runs/x --photos 120 --frames 300

Everything is generated from the shipped sample photo (no dataset needed):
- one photo, 640x480 with 1, 3 and 5 faces and a 4032x3024 phone-sized JPEG file: ms per photo
  for Recognizer.predict with the old detection (one pass at 1280 px by the yuface wheel's C
  library) and the new default (YuNet run by onnxruntime, or PyTorch without the onnx extra,
  at DETECT_SIZE with the finer pass), the classifier in PyTorch (`backend="torch"`), and the
  default, whose classifier runs in onnxruntime where the onnx extra is installed (the
  checkpoint exported once and cached);
- a folder of --photos 640x480 JPEGs (1, 3 or 5 faces each): photos/s one image at a time
  (read, then predict: the loop `ferkit predict` ran before the pipeline) and through
  ferkit.recognition.pipeline.recognize_images (read and detect in threads, batched
  classification), with the same faces checked;
- a 640x480 mp4 of --frames frames: frames/s through process_video (every frame recognised,
  annotated and encoded) against a one-frame-at-a-time loop doing the same work;
- the classifier alone: faces/s at batch 1 and 256 for PyTorch fp32, PyTorch bf16 autocast
  (CPUs with bf16 units only), onnxruntime fp32 and onnxruntime int8.

Each figure is the median of --repeats timed runs after a warm-up (photo latency) or one timed
pass after a warm-up pass (folder, video). The header names the CPU, threads and versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import median_ms  # bench/timing.py, beside this script


def vga_photo(n_faces: int) -> np.ndarray:
    """A 640x480 RGB photo holding n_faces of the sample photo's faces on a grey background."""
    import cv2

    from ferkit.recognition.images import read_image
    from ferkit.recognition.samples import SAMPLE_PANELS, sample_photo

    photo = read_image(sample_photo()).array
    panels = [photo[y:y + h, x:x + w] for x, y, w, h in SAMPLE_PANELS.values()]
    canvas = np.full((480, 640, 3), 120, np.uint8)
    if n_faces == 1:
        p = panels[0]
        scale = min(440 / p.shape[0], 600 / p.shape[1])
        p = cv2.resize(p, (int(p.shape[1] * scale), int(p.shape[0] * scale)))
        canvas[20:20 + p.shape[0], 20:20 + p.shape[1]] = p
        return canvas
    cells = [(c * 213, r * 240) for r in range(2) for c in range(3)][:n_faces]
    for i, (x, y) in enumerate(cells):
        p = panels[i % len(panels)]
        scale = min(230 / p.shape[0], 205 / p.shape[1])
        p = cv2.resize(p, (int(p.shape[1] * scale), int(p.shape[0] * scale)))
        canvas[y + 5:y + 5 + p.shape[0], x + 4:x + 4 + p.shape[1]] = p
    return canvas


def letterboxed_sample(size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """The shipped 3-face sample photo (1157x400) letterboxed into `size` (the issue's photo)."""
    import cv2

    from ferkit.recognition.images import read_image
    from ferkit.recognition.samples import sample_photo

    photo = read_image(sample_photo()).array
    w, h = size
    scale = min(w / photo.shape[1], h / photo.shape[0])
    fitted = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)),
                        interpolation=cv2.INTER_AREA)
    canvas = np.zeros((h, w, 3), np.uint8)
    y, x = (h - fitted.shape[0]) // 2, (w - fitted.shape[1]) // 2
    canvas[y:y + fitted.shape[0], x:x + fitted.shape[1]] = fitted
    return canvas


def faces_key(faces) -> list:
    return [(f.box, f.expression) for f in faces]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", default="default", help="'default', a run dir or checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--photos", type=int, default=60, help="photos in the folder test")
    parser.add_argument("--frames", type=int, default=150, help="frames in the video test")
    parser.add_argument("--workers", type=int, default=0, help="pipeline threads (0: default)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    import cv2
    from PIL import Image

    cv2.setNumThreads(args.threads)
    import onnxruntime

    from ferkit.models.export import export_onnx, quantize_int8
    from ferkit.models.onnx_predictor import has_onnx_extra
    from ferkit.precision import cpu_has_native_bf16
    from ferkit.recognition.detector import LibfacedetectionDetector
    from ferkit.recognition.draw import annotate
    from ferkit.recognition.images import MAX_SIDE, read_image
    from ferkit.recognition.pipeline import default_workers, recognize_images
    from ferkit.recognition.recognizer import Recognizer
    from ferkit.recognition.sizes import DETECT_SIZE
    from ferkit.recognition.video import process_video

    rec = Recognizer(model=args.model, device="cpu", backend="torch")
    tmp = Path(tempfile.mkdtemp(prefix="ferkit-pipeline-"))
    onnx_path = tmp / "model.onnx"
    export_onnx(args.model, onnx_path)
    rec_onnx = Recognizer(model=args.model, device="cpu")  # the default: backend auto
    default_backend = rec_onnx.predictor.meta.get("backend", "torch")
    print(f"device: cpu ({platform.processor() or platform.machine()}), {os.cpu_count()} "
          f"logical CPUs, torch threads {torch.get_num_threads()}, opencv threads "
          f"{cv2.getNumThreads()}, pipeline workers {args.workers or default_workers()}")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, opencv "
          f"{cv2.__version__}; model {rec.predictor.arch} ({args.model}); "
          f"{time.strftime('%Y-%m-%d')}")

    # The path before 2026-12-02: one detection pass at 1280 px by the yuface wheel's C library
    # on the picture decoded at up to 4096 px. The default now: YuNet run by PyTorch at
    # DETECT_SIZE with the finer pass where needed.
    rec_old = Recognizer(model=args.model, device="cpu", backend="torch",
                         detector=LibfacedetectionDetector(detect_size=1280, finer_pass=False))
    rec_old.decode_side = MAX_SIDE
    print(f"\n## one photo (read + detect + align + classify), median ms: old = one detection "
          f"pass at 1280 px by libfacedetection (yuface), new = YuNet run by "
          f"{'onnxruntime' if has_onnx_extra() else 'PyTorch'} at {DETECT_SIZE} px with the finer "
          "pass where needed")
    big = tmp / "phone-4032x3024.jpg"
    Image.fromarray(letterboxed_sample((4032, 3024))).save(big, quality=90)
    photos = [(f"640x480, {n} face(s) of 28-150 px", vga_photo(n)) for n in (1, 3, 5)]
    photos += [("the 3-face sample letterboxed into 640x480", letterboxed_sample()),
               ("the same in a 4032x3024 JPEG file", big)]
    for label, photo in photos:
        found = {name: faces_key(r.predict(photo))
                 for name, r in (("old", rec_old), ("new", rec), ("onnx", rec_onnx))}
        t_old = median_ms(lambda p=photo: rec_old.predict(p), args.repeats)
        t_new = median_ms(lambda p=photo: rec.predict(p), args.repeats)
        t_onnx = median_ms(lambda p=photo: rec_onnx.predict(p), args.repeats)
        same = "same faces" if len(found["old"]) == len(found["new"]) == len(found["onnx"]) \
            else "faces differ: " + ", ".join(f"{k} {len(v)}" for k, v in found.items())
        print(f"{label}: old {t_old:.1f} ms, new with the classifier in PyTorch {t_new:.1f} ms "
              f"({t_old / t_new:.2f}x), the default ({default_backend} classifier) "
              f"{t_onnx:.1f} ms ({t_old / t_onnx:.2f}x); "
              f"{len(found['new'])} found, {same}")

    print(f"\n## a folder of {args.photos} 640x480 JPEGs")
    folder = tmp / "photos"
    folder.mkdir()
    paths = []
    for i in range(args.photos):
        path = folder / f"photo-{i:04d}.jpg"
        Image.fromarray(vga_photo((1, 3, 5)[i % 3])).save(path, quality=90)
        paths.append(path)
    for name, r in (("torch", rec), ("onnxruntime", rec_onnx)):
        r.predict(read_image(paths[0]))  # warm-up
        start = time.perf_counter()
        one_by_one = [faces_key(r.predict(read_image(p))) for p in paths]
        t_old = time.perf_counter() - start
        list(recognize_images(r, paths[:6], workers=args.workers))  # warm-up
        start = time.perf_counter()
        piped = [faces_key(res.faces) for res in recognize_images(r, paths, workers=args.workers)]
        t_new = time.perf_counter() - start
        same = "same faces" if piped == one_by_one else "FACES DIFFER"
        print(f"{name}: one at a time {len(paths) / t_old:.1f} photos/s, pipeline "
              f"{len(paths) / t_new:.1f} photos/s ({t_old / t_new:.2f}x, {same})")

    print(f"\n## a 640x480 video, {args.frames} frames, every frame recognised and annotated")
    clip = tmp / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    base = vga_photo(3)
    for i in range(args.frames):
        writer.write(np.ascontiguousarray(np.roll(base, 2 * (i % 40), axis=1)[:, :, ::-1]))
    writer.release()
    for name, r in (("torch", rec), ("onnxruntime", rec_onnx)):
        start = time.perf_counter()
        cap = cv2.VideoCapture(str(clip))
        out = cv2.VideoWriter(str(tmp / "old.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0,
                              (640, 480))
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            out.write(np.ascontiguousarray(annotate(rgb, r.predict(rgb))[:, :, ::-1]))
            n += 1
        cap.release()
        out.release()
        t_old = time.perf_counter() - start
        start = time.perf_counter()
        result = process_video(r, clip, tmp / f"video-{name}")
        t_new = time.perf_counter() - start  # includes the CSV, JSON and timeline plot
        print(f"{name}: one frame at a time {n / t_old:.1f} frames/s, process_video "
              f"{result.frames_read / t_new:.1f} frames/s ({t_old / t_new:.2f}x; "
              f"{result.n_faces} faces)")

    print("\n## the classifier alone, faces/s")
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (256, 48, 48), dtype=np.uint8)
    int8_path = quantize_int8(onnx_path, tmp / "model.int8.onnx", faces)
    from ferkit.models.onnx_predictor import OnnxPredictor

    predictor = rec.predictor

    def torch_bf16(batch: np.ndarray) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            predictor.model(predictor.to_input(batch)).float().softmax(1)

    rows = [("torch fp32", lambda b: predictor.predict_proba(b, batch_size=256))]
    if cpu_has_native_bf16():
        rows.append(("torch bf16 autocast", torch_bf16))
    rows += [("onnxruntime fp32", OnnxPredictor.load(onnx_path).predict_proba),
             ("onnxruntime int8", OnnxPredictor.load(int8_path).predict_proba)]
    for name, fn in rows:
        t256 = median_ms(lambda f=fn: f(faces), max(3, args.repeats // 2))
        t1 = median_ms(lambda f=fn: [f(x[None]) for x in faces[:100]], 3, warmup=1)
        print(f"{name}: batch 256 {256 / t256 * 1000:,.0f} faces/s, batch 1 "
              f"{100 / t1 * 1000:,.0f} faces/s")


if __name__ == "__main__":
    main()

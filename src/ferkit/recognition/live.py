"""Live recognition from a camera: boxes, labels and FPS in an OpenCV window.

The per-frame work is `process_frame` (testable without a camera or display); `run_webcam`
only adds the capture loop and the window. Faces are followed from frame to frame as in a
video (ferkit.recognition.tracking): each box carries a track id and the smoothed label.
ferkit depends on opencv-python-headless, which has no windows: `check_display` says so
clearly instead of failing deep inside OpenCV.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ferkit.errors import FerkitError
from ferkit.recognition.draw import annotate
from ferkit.recognition.face import Face
from ferkit.recognition.tracking import DEFAULT_SMOOTH, FaceTracker, TrackerConfig

WINDOW = "ferkit webcam (q or Esc to quit)"


class FPSMeter:
    """Frames per second, smoothed with an exponential moving average."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.fps: float | None = None
        self._last: float | None = None

    def tick(self, now: float | None = None) -> float | None:
        now = time.perf_counter() if now is None else now
        if self._last is not None and now > self._last:
            current = 1.0 / (now - self._last)
            self.fps = current if self.fps is None else \
                self.smoothing * self.fps + (1 - self.smoothing) * current
        self._last = now
        return self.fps


def process_frame(recognizer, frame_bgr: np.ndarray, fps: float | None = None,
                  tracker: FaceTracker | None = None, now: float | None = None
                  ) -> tuple[np.ndarray, list[Face]]:
    """One camera frame (BGR, as OpenCV gives it) -> (annotated BGR frame, faces).

    tracker: follows the faces from the frames before (track ids, smoothed labels); `now`,
    the frame's time in seconds, defaults to time.perf_counter().
    """
    rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
    faces = recognizer.predict(rgb)
    if tracker is not None:
        tracker.update(faces, time.perf_counter() if now is None else now)
    text = f"{fps:.1f} FPS" if fps is not None else None
    annotated = annotate(rgb, faces, extra_text=text)
    return np.ascontiguousarray(annotated[:, :, ::-1]), faces


def check_display() -> None:
    """FerkitError unless OpenCV can open a window here."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise FerkitError("webcam needs a display, and none is available (DISPLAY is not set); "
                          "for files use `ferkit predict VIDEO --out DIR` instead")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        raise FerkitError(
            "this OpenCV build has no GUI support (ferkit installs opencv-python-headless); "
            "for a live window run `pip uninstall -y opencv-python-headless && "
            "pip install opencv-python`, or use `ferkit predict VIDEO --out DIR`") from exc


def run_webcam(recognizer, camera: int = 0, max_frames: int | None = None,
               smooth: float = DEFAULT_SMOOTH) -> int:
    """Show the camera with recognised expressions until q/Esc; returns frames shown.

    smooth: seconds of the moving average behind each tracked face's label (0: raw labels).
    """
    import cv2

    check_display()
    cap = cv2.VideoCapture(camera)
    if not cap.isOpened():
        cv2.destroyAllWindows()
        raise FerkitError(f"cannot open camera {camera} (not connected, or in use by another "
                          "program); try --camera 1")
    meter = FPSMeter()
    tracker = FaceTracker(TrackerConfig(smooth=smooth), recognizer.classes)
    shown = 0
    try:
        while max_frames is None or shown < max_frames:
            ok, frame = cap.read()
            if not ok:
                raise FerkitError(f"camera {camera} stopped sending frames")
            annotated, _ = process_frame(recognizer, frame, meter.tick(), tracker)
            cv2.imshow(WINDOW, annotated)
            shown += 1
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                break
            if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                break
    finally:
        cap.release()
        cv2.destroyAllWindows()
    return shown

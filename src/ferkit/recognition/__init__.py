"""Recognition in the wild: read images, detect and align faces, classify their expressions.

    from ferkit.recognition import Recognizer   # also ferkit.Recognizer
    faces = Recognizer().predict("photo.jpg")

Modules: images (paths, PIL images and arrays through the shared decoder, ferkit.images),
detector (YuNet behind a small interface), align (FER2013-style 48x48 crops, quality flags),
recognizer (the pipeline), pipeline (folders: threads + batches), batch (`ferkit predict`'s
inputs and outputs), draw (annotated images, figures), video (per-frame results), live
(webcam), samples (the bundled sample photo), explain (saliency maps per face, `ferkit explain`).
"""

from ferkit.recognition.face import Face

__all__ = ["Face", "Recognizer"]


def __getattr__(name: str):
    if name == "Recognizer":
        from ferkit.recognition.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'ferkit.recognition' has no attribute {name!r}")

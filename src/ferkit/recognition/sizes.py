"""The sizes detection works at, and its confidence threshold, in one place: the command line
reads them without importing the detector (numpy, OpenCV), and `bench/detect_size.py` measured
the choices."""

DETECT_SIZE = 640  # longest side of the copy detection runs on; 0 = the picture as it is
FINER_SIZE = 1280  # the finer pass works at least at this size (the one-pass default until 2026-12)
SMALL_FACE = 24  # px in the detection copy: YuNet's floor (it finds 71% of 20-28 px faces)
# A copy shrunk this much (picture px per copy px) cannot see faces under 4 x SMALL_FACE = 96 px
# of the picture, a common size in a group photo, and nothing in it says they are there when a
# large face stands beside them: such a picture (over 2,560 px for the 640 px copy) is detected
# at the finer size from the start.
ALWAYS_FINER_SHRINK = 4.0
# The Recognizer's default --min-confidence: faces the detector is less sure of are dropped.
# Every other default of it (the detector's, `ferkit predict`'s, `ferkit serve`'s) is this one.
MIN_CONFIDENCE = 0.5
CANDIDATE_SCORE = 0.25  # a detection this sure, short of --min-confidence, hints at a face
SAME_FACE_IOU = 0.4  # two passes' boxes overlapping this much are one face

DETECT_SIZE_HELP = ("Longest side (px) of the copy faces are detected on (0: the picture as it "
                    "is). Bigger finds smaller faces in big photos, slower; a finer pass at "
                    f"twice the size (at least {FINER_SIZE}) runs by itself when a big photo's "
                    "faces are small.")


def finer_side(detect_size: int) -> int:
    """Longest side of the finer pass's copy, and of the picture the Recognizer decodes (its
    crops come from there): twice the detection copy, and no less than FINER_SIZE, so the
    finer pass finds at least what one pass at FINER_SIZE found. 0: no shrinking at all."""
    return max(2 * detect_size, FINER_SIZE) if detect_size else 0


def check_detect_size(detect_size: int) -> None:
    """0, or a size YuNet can work at."""
    from ferkit.errors import ConfigError

    if detect_size != 0 and detect_size < 64:
        raise ConfigError(f"--detect-size {detect_size}: expected 0 (no shrinking) or at least "
                          f"64 px")

"""ServeConfig: what each server process needs to build its app, each setting written once.

`ferkit serve`'s options are generated from these fields (ferkit.cli.fields), the app factory
and the Engine take their defaults from here, and with --workers N the config travels to each
worker process as JSON (`to_json` / `from_json`), typed at both ends. Only the standard library
and the detection sizes are imported: the command line builds --help from this module.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ferkit.errors import ConfigError
from ferkit.options import check_fields, option
from ferkit.recognition.sizes import (
    DETECT_SIZE,
    DETECT_SIZE_HELP,
    MIN_CONFIDENCE,
    check_detect_size,
)

# The `ferkit serve --help` panels, in order (the command's own server options go in the first).
PANELS = ("Server", "Model", "Uploads", "Batching")


@dataclass(frozen=True)
class ServeConfig:
    """The model, its detection, micro-batching, decoding and upload limits of one server
    process. Checked on construction, so a config read back in a worker is as sound as the
    command line's."""

    model: str = option("default", short="-m", panel="Model",
                        help="'default' (bundled weights), a checkpoint file or a run "
                        "directory.")
    device: str = option("auto", panel="Model", help="auto, cpu, cuda, cuda:N or mps.")
    min_confidence: float = option(MIN_CONFIDENCE, panel="Model", bounds=(0.0, 1.0),
                                   help="Face detection threshold.")
    detect_size: int = option(DETECT_SIZE, panel="Model", metavar="PX", help=DETECT_SIZE_HELP)

    threads: int = option(0, panel="Uploads", bounds=(0, 256),
                          help="Decoding/detection threads per process (0: CPU count + 2, at "
                          "most 8).")
    decode_slots: int = option(0, panel="Uploads", bounds=(0, 256),
                               help="Uploads decoded at once per process; the others queue, so "
                               "memory holds at most this many big photos (0: one per CPU, "
                               "divided among --workers).")
    max_upload_mb: float = option(10.0, panel="Uploads", bounds=(0.001, float("inf")),
                                  help="Larger uploads are refused with 413.")
    max_pixels: int = option(40_000_000, panel="Uploads", positive=True,
                             help="Images with more pixels are refused with 413 before they are "
                             "decoded.")
    work_pixels: int = option(2_000_000, panel="Uploads", bounds=(10_000, float("inf")),
                              help="Larger photos are downscaled to this many pixels for "
                              "detection (boxes are reported in the original's pixels).")

    batching: bool = option(True, panel="Batching",
                            help="Micro-batch the classification of concurrent requests.")
    max_batch: int = option(64, panel="Batching", bounds=(1, 4096),
                            help="Most faces in one micro-batch.")
    # The flag says what it waits for; /v1/model and /healthz report it as max_wait_ms.
    max_wait_ms: float = option(3.0, panel="Batching", flag="--batch-wait-ms",
                                bounds=(0.0, 1000.0),
                                help="How long a micro-batch waits for more requests.")

    def __post_init__(self) -> None:
        check_fields(self)
        check_detect_size(self.detect_size)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The config `to_json` wrote; an empty text is the defaults."""
        values: dict[str, Any] = json.loads(text) if text.strip() else {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown serve setting(s): {', '.join(unknown)}")
        return cls(**values)


DEFAULTS = ServeConfig()  # what the library's own defaults (Engine, MicroBatcher, Limits) read

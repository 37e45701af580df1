"""Export a ferkit checkpoint to ONNX, for onnxruntime and other runtimes (`ferkit export`).

The exported graph is the whole classifier, normalisation included:

    input  "faces":         float32 (N, 1, 48, 48), raw grey levels 0..255, any batch size N
    output "probabilities": float32 (N, classes), softmax over the checkpoint's classes

(a calibrated checkpoint's temperature T included: the graph divides the logits by T before its
softmax, and the metadata's `calibration` records the entry; without one the graph is as it
always was), and the file's metadata (`metadata_props`) carries what a consumer needs without
ferkit: the class names (JSON), the architecture, the normalisation, the opset and the source
checkpoint.
The legacy TorchScript-based exporter is used: for these plain CNNs it writes the same graph as
the dynamo exporter in a fraction of the time, with a dynamic batch axis.

`quantize_int8` turns such a file into a static int8 one (onnxruntime's QDQ format, per-channel
weights, activations calibrated on real faces). Weights use 7 of their 8 bits
(`reduce_range`): on CPUs without VNNI (AVX2 or plain AVX-512) onnxruntime's u8s8 kernels
multiply-add pairs into 16 bits and saturate, which cost the bundled model 8.75 points of
PublicTest accuracy on an AVX2 AMD EPYC (59.40% against 68.15%); with 7-bit weights it lost
0.17 points there and still ran 1.7x faster than fp32 at batch 256, and the file behaves the
same on every CPU it is copied to. Dynamic quantisation is not offered: it quantises only
matrix products, and these models are convolutions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ferkit.classes import FACE_SIZE
from ferkit.errors import ModelError
from ferkit.models.calibration import KEY as CALIBRATION
from ferkit.models.calibration import checkpoint_temperature
from ferkit.models.checkpoint import build_model, load_checkpoint
from ferkit.version import __version__

log = logging.getLogger(__name__)

OPSET = 17
INPUT, OUTPUT = "faces", "probabilities"
META_PREFIX = "ferkit_"


class _Classifier(nn.Module):
    """Raw 0..255 pixels -> probabilities: the checkpoint's model (its normalisation inside),
    its logits divided by the calibration temperature where it is not 1."""

    def __init__(self, model: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        logits = self.model(faces / 255.0).float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return logits.softmax(dim=1)


@dataclass
class ExportResult:
    path: Path
    opset: int
    classes: list[str]
    arch: str
    size_bytes: int


def export_onnx(spec: str | Path, out: str | Path, opset: int = OPSET) -> ExportResult:
    """Write checkpoint `spec` ('default', a run directory or a .pt file) as ONNX to `out`."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("ONNX export needs the onnx extra: pip install 'ferkit[onnx]'") from exc
    ckpt = load_checkpoint(spec)
    model = build_model(ckpt).to("cpu", memory_format=torch.contiguous_format).eval()
    norm = ckpt["normalization"]
    wrapped = _Classifier(model, checkpoint_temperature(ckpt, str(ckpt["path"]))).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, FACE_SIZE, FACE_SIZE)
    torch.onnx.export(wrapped, (example,), str(out), input_names=[INPUT], output_names=[OUTPUT],
                      dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                      opset_version=opset, dynamo=False)
    graph = onnx.load(str(out))
    meta = {"classes": json.dumps(list(ckpt["classes"])), "arch": str(ckpt["arch"]),
            "arch_kwargs": json.dumps(ckpt.get("arch_kwargs") or {}),
            "normalization": json.dumps({"mean": float(norm["mean"]), "std": float(norm["std"])}),
            "source": str(ckpt["path"]), "epoch": str(ckpt.get("epoch", "")),
            "metrics": json.dumps(ckpt.get("metrics") or {}), "version": __version__,
            "input": f"{INPUT}: float32 (N, 1, {FACE_SIZE}, {FACE_SIZE}) grey levels 0..255",
            "output": f"{OUTPUT}: float32 (N, {len(ckpt['classes'])}) softmax"}
    if ckpt.get(CALIBRATION) is not None:
        meta["calibration"] = json.dumps(ckpt[CALIBRATION])
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    graph.producer_name = "ferkit"
    onnx.save(graph, str(out))
    log.debug("exported %s to %s (opset %d)", ckpt["path"], out, opset)
    return ExportResult(out, opset, list(ckpt["classes"]), str(ckpt["arch"]), out.stat().st_size)


CALIBRATION_FACES = 512


def quantize_int8(fp32_path: str | Path, out: str | Path, faces) -> Path:
    """Static int8 copy of a `ferkit export` file, calibrated on `faces` (uint8 (N, 48, 48);
    up to CALIBRATION_FACES are used), with the original metadata."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    faces = np.asarray(faces, dtype=np.uint8)
    if len(faces) == 0:
        raise ModelError("--int8 needs calibration faces; the calibration data has none")
    if len(faces) > CALIBRATION_FACES:
        pick = np.random.default_rng(0).choice(len(faces), CALIBRATION_FACES, replace=False)
        faces = faces[np.sort(pick)]

    class _Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self):
            if self.start >= len(faces):
                return None
            batch = faces[self.start:self.start + 64].astype(np.float32)[:, None]
            self.start += 64
            return {INPUT: batch}

    out = Path(out)
    prepared = out.with_name(f".{out.name}.pre.onnx")
    chatty = logging.getLogger("onnxruntime.quantization")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # its INFO lines are progress chatter
    try:
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(out), _Faces(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, reduce_range=True)
    finally:
        chatty.setLevel(level)
        prepared.unlink(missing_ok=True)
    source, quantized = onnx.load(str(fp32_path)), onnx.load(str(out))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    entry = quantized.metadata_props.add()
    entry.key, entry.value = META_PREFIX + "quantization", (
        f"int8 static QDQ, per-channel 7-bit weights, calibrated on {len(faces)} faces")
    onnx.save(quantized, str(out))
    return out

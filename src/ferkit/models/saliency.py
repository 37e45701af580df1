"""Saliency maps: which pixels of a 48x48 face made the model name its class.

Two methods, PyTorch hooks and autograd only:

- Grad-CAM (Selvaraju et al., 2017) on the model's last convolutional feature map: each
  channel weighted by the mean gradient of the class logit over it, summed, ReLU, upsampled to
  48x48. Coarse (ferkit-small's last map is 3x3) but class-specific and robust to noise.
- The input gradient, for models without a usable conv block: SmoothGrad (Smilkov et al.,
  2017), the absolute gradient of the class logit with respect to the pixels averaged over
  noisy copies of the face (or gradient x input), then blurred, so the map shows regions,
  not the salt-and-pepper of one raw gradient.

The Grad-CAM layer is found, not named per architecture: the module that last produced a
spatial (H, W > 1) feature map in a forward pass. It is *usable* when every path from the
input to the logits goes through it; this is checked by cutting the graph there (its output
detached) and seeing that no gradient reaches the input. An ensemble, whose members each have
their own last block, fails the check, and "auto" then takes the input gradient.

Maps are float32 in [0, 1] (each from its minimum to its maximum), 48x48, one per face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.classes import FACE_SIZE
from ferkit.errors import ConfigError, ModelError
from ferkit.models.inference import model_device, to_pixels

log = logging.getLogger(__name__)

METHODS = ("auto", "gradcam", "gradient", "gradient-x-input")


@dataclass(frozen=True)
class SaliencyConfig:
    """How maps are made. auto: Grad-CAM where the model has a usable conv block, else
    gradient. noise: SmoothGrad's noise std in pixel units (faces are in [0, 1]); samples: the
    noisy copies per face (0: the plain gradient); blur: Gaussian sigma in pixels applied to
    gradient maps (0: none); layer: the module name for Grad-CAM (None: found)."""

    method: str = "auto"
    samples: int = 16
    noise: float = 0.1
    blur: float = 1.5
    layer: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"saliency method {self.method!r}: expected one of "
                              f"{', '.join(METHODS)}")
        if self.samples < 0 or self.noise < 0 or self.blur < 0:
            raise ConfigError("saliency samples, noise and blur must be non-negative")


@dataclass
class Saliency:
    """Maps (N, 48, 48) float32 in [0, 1] of classes `targets` (N,), made with `method`
    ("gradcam", "gradient" or "gradient-x-input"); `layer` names Grad-CAM's module."""

    maps: np.ndarray
    targets: np.ndarray
    method: str
    layer: str | None = None


def feature_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """Name of the module that last output a spatial feature map (B, C, H, W > 1) in a forward
    pass of `x`; a container finishes after its children, so a block that merges branches
    (an Inception block, a residual stage) wins over the branches inside it."""
    finished: list[str] = []
    handles = []

    def hook(name: str):
        def record(module, args, output) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[2:]) > 1:
                finished.append(name)
        return record

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return finished[-1] if finished else None


def _grad_cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str
              ) -> torch.Tensor | None:
    """(N, 48, 48) Grad-CAM maps from `layer`, or None where the input reaches the logits
    other than through it (the graph is cut at the layer: any gradient left at the input
    means a path around it)."""
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise ModelError(f"saliency: the model has no module {layer!r}")
    held: dict[str, torch.Tensor] = {}

    def cut(mod, args, output):
        leaf = output.detach().requires_grad_(True)
        held["a"] = leaf
        return leaf.clone()  # not the leaf itself: an in-place op after the layer stays legal

    handle = module.register_forward_hook(cut)
    try:
        x = x.detach().requires_grad_(True)
        logits = model(x).float()
    finally:
        handle.remove()
    if "a" not in held:
        raise ModelError(f"saliency: layer {layer!r} did not run in the forward pass")
    score = logits.gather(1, targets[:, None]).sum()
    grad_a, grad_x = torch.autograd.grad(score, [held["a"], x], allow_unused=True)
    if grad_x is not None and bool(grad_x.abs().max() > 0):
        return None
    if grad_a is None:
        return None
    a = held["a"].float()
    weights = grad_a.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0]


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, H, W) maps blurred with a Gaussian of `sigma` px (reflected at the borders)."""
    if sigma <= 0:
        return maps
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(maps[:, None], (radius,) * 4, mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    out = F.conv2d(out, k.view(1, 1, -1, 1))
    return out[:, 0]


def _input_gradient(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                    config: SaliencyConfig, times_input: bool) -> torch.Tensor:
    """(N, 48, 48) SmoothGrad maps: |d logit / d pixel| (or |grad x input|) averaged over
    `config.samples` noisy copies of each face, blurred."""
    n = len(x)
    copies = max(1, config.samples)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    total = torch.zeros((n, *x.shape[-2:]), device=x.device)
    for _ in range(copies):  # one noisy copy of every face per pass: memory stays at N faces
        noisy = x
        if config.samples and config.noise:
            noise = torch.randn(x.shape, generator=gen) * config.noise
            noisy = x + noise.to(x.device)
        noisy = noisy.detach().requires_grad_(True)
        score = model(noisy).float().gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, [noisy])
        g = grad * noisy if times_input else grad
        total += g.detach().float().abs()[:, 0]
    return _gaussian_blur(total / copies, config.blur)


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """Each map scaled from its minimum (0) to its maximum (1), as Grad-CAM is usually shown:
    the floor every cell shares says nothing about where the model looked. A flat map is 0."""
    maps = maps.detach().float()
    low = maps.flatten(1).amin(dim=1)[:, None, None]
    span = (maps.flatten(1).amax(dim=1)[:, None, None] - low).clamp_min(1e-12)
    return ((maps - low) / span).clamp(0, 1).cpu().numpy().astype(np.float32)


def saliency(model: nn.Module, faces, targets=None, config: SaliencyConfig | None = None
             ) -> Saliency:
    """Saliency maps of `faces` ((N, 48, 48) uint8, or floats in [0, 1]) for the classes
    `targets` (N ints; None: each face's predicted class).

    The model runs in eval mode (its mode is restored) in fp32; no parameter gradient is
    kept. Not thread-safe for one model: hooks are added to it for the call.
    """
    config = config or SaliencyConfig()
    device = model_device(model)
    x = to_pixels(faces, device)
    if x.shape[1:] != (1, FACE_SIZE, FACE_SIZE):
        raise ValueError(f"expected (N, 48, 48) faces, got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            if targets is None:
                with torch.no_grad():
                    targets = model(x).argmax(dim=1) if len(x) else torch.zeros(0)
            elif not isinstance(targets, torch.Tensor):
                targets = torch.as_tensor(np.asarray(targets))
            targets = targets.to(device=device, dtype=torch.long)
            if targets.shape != (len(x),):
                raise ValueError(f"{len(x)} faces but targets of shape {tuple(targets.shape)}")
            if len(x) == 0:
                empty = np.zeros((0, FACE_SIZE, FACE_SIZE), np.float32)
                return Saliency(empty, targets.cpu().numpy(), "none")
            method, maps, layer = config.method, None, None
            if method in ("auto", "gradcam"):
                layer = config.layer or feature_layer(model, x)
                if layer is not None:
                    maps = _grad_cam(model, x, targets, layer)
                if maps is None:
                    if method == "gradcam":
                        why = ("no spatial feature map" if layer is None else
                               f"the input reaches the output around {layer!r}")
                        raise ModelError(f"Grad-CAM needs a last conv block every path goes "
                                         f"through ({why}); use the gradient method")
                    log.debug("no usable conv block (%s): input gradient instead", layer)
                    method, layer = "gradient", None
                else:
                    method = "gradcam"
            if maps is None:
                maps = _input_gradient(model, x, targets, config,
                                       times_input=method == "gradient-x-input")
    finally:
        model.train(was_training)
    return Saliency(_normalise(maps), targets.cpu().numpy(), method, layer)

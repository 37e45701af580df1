"""Knowledge distillation: a frozen teacher's softened probabilities as extra training targets.

    loss = (1 - a) * CE(student, labels) + a * T^2 * KL(softmax(teacher/T) || softmax(student/T))

(Hinton et al., 2015), computed on the same augmented batch the student sees, so the teacher
labels every augmented view afresh. The teacher is any checkpoint ferkit can load: a run
directory, a .pt file, or a `ferkit ensemble` (whose log-probabilities serve as logits). It runs
frozen, in eval mode and in the training precision, on the same [0, 1] pixels as the student (each
model normalises with its own statistics inside it). T^2 keeps the soft term's gradients on the
scale of the hard one as T changes.

Three ways to get the teacher's targets (--distill-targets):
- live (the default): the teacher runs on every augmented batch, so it labels exactly the view
  the student sees; each step costs a teacher forward pass on top of the student's step
  (measured on the CPU with a three-model ensemble of the student's size: 0.77x the speed
  without a teacher in bench/distill_cost.py, 310-370 against 860-1,150 images/s in full runs).
- fixed: the teacher's flip-averaged probabilities on each clean training face, computed once
  before training (one inference pass over Training) and looked up by index per step, so a large
  teacher costs nothing per step. The student's augmented view (shifted, rotated, erased) gets
  its clean image's target.
- views: K augmented copies of every face are made once (the training augmentation without its
  flip, stored as uint8: 2.3 KB a face a view) and the teacher labels each, flip-averaged, once;
  each step shows the student one stored view per face, flipped afresh, with the teacher's
  answer on that very view. The teacher costs K inference passes over Training before the
  first epoch and nothing per step; the student sees K views of a face instead of a new one
  every epoch, and on FER2013 memorised them (8 views: 67.09% PublicTest against 67.37-67.62%
  for fixed targets from the same teacher; README, Results).

`DistillTargets.build(config, ...)` sets up whichever mode the run asks for (or none, without a
teacher), and the training loop asks it the same two things each step, whatever the mode.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.classes import CLASSES
from ferkit.errors import ModelError
from ferkit.models.checkpoint import build_model, load_checkpoint
from ferkit.models.inference import predict_proba
from ferkit.precision import Precision
from ferkit.training.augment import BatchAugment, flip_only, without_flip
from ferkit.training.config import TrainConfig
from ferkit.training.mixing import Mix


@dataclass
class Teacher:
    model: nn.Module  # a NormalizedModel: [0, 1] pixels in
    path: str
    digest: str  # of the checkpoint file: a resumed run must distil from the same teacher

    @classmethod
    def load(cls, spec: str, device: torch.device, precision: Precision,
             classes: tuple[str, ...]) -> Teacher:
        ckpt = load_checkpoint(spec)
        if tuple(ckpt["classes"]) != tuple(classes):
            raise ModelError(f"--teacher {spec}: its classes {ckpt['classes']} differ from the "
                             f"student's {list(classes)}")
        model = build_model(ckpt).to(device).eval()
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.requires_grad_(False)
        return cls(model, ckpt["path"], file_digest(Path(ckpt["path"])))

    @torch.no_grad()
    def logits(self, x: torch.Tensor, precision: Precision) -> torch.Tensor:
        """Teacher logits for a batch of [0, 1] pixels (the student's augmented batch)."""
        with precision.autocast(x.device):
            return self.model(x).float()

    def fixed_targets(self, faces: torch.Tensor, precision: Precision,
                      batch_size: int = 256) -> torch.Tensor:
        """(N, C) teacher log-probabilities of every face (uint8 or [0, 1]), flip-averaged: the
        targets of --distill-targets fixed, used as logits (softmax(log p / T) tempers p)."""
        probs = predict_proba(self.model, faces, tta="flip", precision=precision,
                              batch_size=batch_size)
        return probs.clamp_min(1e-8).log()

    def record(self) -> dict[str, str]:
        return {"path": self.path, "digest": self.digest}


@dataclass
class TeacherViews:
    """--distill-targets views: stored augmented views of the training faces and the teacher's
    flip-averaged log-probabilities on each."""

    images: torch.Tensor  # (K, N, 1, H, W) uint8
    targets: torch.Tensor  # (K, N, C) log-probabilities, used as logits

    @classmethod
    @torch.no_grad()
    def make(cls, teacher: Teacher, faces: torch.Tensor, augment: nn.Module, views: int,
             seed: int, precision: Precision, batch_size: int = 256) -> TeacherViews:
        """faces: (N, 1, H, W) uint8; augment: uint8 -> [0, 1] pixels, without the flip (the
        targets are flip-averaged, so the student's flip is drawn afresh each step). The views
        come from their own seeded random stream, so a resumed run rebuilds the same ones."""
        devices = [faces.device] if faces.device.type == "cuda" else []
        images = torch.empty((views, *faces.shape), dtype=torch.uint8, device=faces.device)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for k in range(views):
                for start in range(0, len(faces), batch_size):
                    x = augment(faces[start:start + batch_size], train=True)
                    images[k, start:start + batch_size] = x.mul(255).round_().clamp_(0, 255)
        targets = torch.stack([teacher.fixed_targets(v, precision, batch_size) for v in images])
        return cls(images, targets)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One stored view of each face in idx, drawn at random, and the teacher's answer on it."""
        pick = torch.randint(len(self.images), idx.shape, device=idx.device)
        return self.images[pick, idx], self.targets[pick, idx]


class DistillTargets:
    """The teacher's targets of each training batch, in one of the --distill-targets modes (the
    subclasses below); this base class is a run without a teacher, whose batches have none.

    Each step asks two things: `inputs(idx, faces, augment)`, the student's batch of the faces
    idx (augmented, or stored views of them) with the teacher's stored answers on it if the mode
    keeps any; then, once the batch is blended (--mix) and laid out for the model,
    `targets(x, mix, stored)`: the teacher's answers on the very batch the student sees, as
    logits (computed on x when live; stored ones blended as the images were).
    """

    teacher: Teacher | None = None
    seconds: float = 0.0  # computing the targets before the first epoch (fixed, views)

    @staticmethod
    def build(config: TrainConfig, faces: torch.Tensor, fill: float, precision: Precision,
              batch_size: int = 256) -> DistillTargets:
        """The run's targets: none without --teacher; else the teacher loaded (on the device of
        `faces`, the uint8 training faces) and, for fixed and views, its answers computed now.
        fill: the training set's mean pixel (the augmentation's erase value)."""
        if not config.teacher:
            return DistillTargets()
        teacher = Teacher.load(config.teacher, faces.device, precision, CLASSES)
        start = time.perf_counter()
        if config.distill_targets == "fixed":
            out: DistillTargets = FixedTargets(
                teacher, teacher.fixed_targets(faces, precision, batch_size))
        elif config.distill_targets == "views":
            augment = BatchAugment(without_flip(config), fill=fill).to(faces.device)
            views = TeacherViews.make(teacher, faces, augment, config.distill_views, config.seed,
                                      precision, batch_size)
            flip = BatchAugment(flip_only(config)).to(faces.device)  # the views' fresh flips
            out = ViewTargets(teacher, views, flip)
        else:
            out = LiveTargets(teacher, precision)
        out.seconds = time.perf_counter() - start
        return out

    def inputs(self, idx: torch.Tensor, faces: torch.Tensor, augment: nn.Module
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's batch of faces[idx] ([0, 1] pixels), and the teacher's stored answers on
        it (None where the mode stores none)."""
        return augment(faces[idx], train=True), None

    def targets(self, x: torch.Tensor, mix: Mix | None, stored: torch.Tensor | None
                ) -> torch.Tensor | None:
        """The teacher's answers (logits) on x, the batch the student sees, which `mix` blended
        (None: unmixed); `stored` is what inputs() gave with it. None without a teacher."""
        return None

    def checkpoint_entries(self) -> dict[str, dict[str, str]]:
        """What the run's checkpoints record of the teacher (a resumed run needs the same)."""
        return {"teacher": self.teacher.record()} if self.teacher is not None else {}


class LiveTargets(DistillTargets):
    """--distill-targets live: the teacher labels every batch as the student sees it."""

    def __init__(self, teacher: Teacher, precision: Precision) -> None:
        self.teacher, self.precision = teacher, precision

    def targets(self, x: torch.Tensor, mix: Mix | None, stored: torch.Tensor | None
                ) -> torch.Tensor:
        return self.teacher.logits(x, self.precision)  # of the mixed batch itself


class _StoredTargets(DistillTargets):
    """Answers computed before the first epoch and looked up each step (fixed, views); a mixed
    batch gets its pairs' answers blended in the images' shares."""

    def targets(self, x: torch.Tensor, mix: Mix | None, stored: torch.Tensor | None
                ) -> torch.Tensor | None:
        return stored if mix is None or stored is None else mix.log_probs(stored)


class FixedTargets(_StoredTargets):
    """--distill-targets fixed: the teacher's flip-averaged log-probabilities of each clean
    training face, looked up by index; the student's augmented view gets its face's."""

    def __init__(self, teacher: Teacher, table: torch.Tensor) -> None:
        self.teacher, self.table = teacher, table  # (N, C): row i, training face i

    def inputs(self, idx: torch.Tensor, faces: torch.Tensor, augment: nn.Module
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(faces[idx], train=True), self.table[idx]


class ViewTargets(_StoredTargets):
    """--distill-targets views: one stored view of each face, drawn at random and flipped
    afresh (in place of the training augmentation), with the teacher's answer on that view."""

    def __init__(self, teacher: Teacher, views: TeacherViews, flip: nn.Module) -> None:
        self.teacher, self.views, self.flip = teacher, views, flip

    def inputs(self, idx: torch.Tensor, faces: torch.Tensor, augment: nn.Module
               ) -> tuple[torch.Tensor, torch.Tensor]:
        images, stored = self.views.batch(idx)
        return self.flip(images, train=True), stored


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""Knowledge distillation (--teacher): a student learns the teacher's behaviour, even where it
contradicts the labels; the loss is the textbook one; a resumed run needs the same teacher."""

from __future__ import annotations

import pytest
import torch
from test_training_helpers import make_face_dataset, tiny_config

from ferkit.classes import CLASSES
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ModelError
from ferkit.models.checkpoint import load_checkpoint
from ferkit.models.ensemble import save_ensemble
from ferkit.models.inference import FP32
from ferkit.models.predictor import Predictor
from ferkit.training.config import ConfigError, TrainConfig
from ferkit.training.distill import Teacher, distill_loss
from ferkit.training.trainer import train


@pytest.fixture(scope="module")
def dataset():
    return make_face_dataset(n_per_class=24)


@pytest.fixture(scope="module")
def shifted_teacher(tmp_path_factory, dataset):
    """A teacher that learned label (y + 1) % 7: its answers disagree with every true label."""
    shifted = FaceDataset(dataset.images, (dataset.labels + 1) % 7, dataset.splits,
                          dataset.names, "shifted")
    out = tmp_path_factory.mktemp("teacher") / "run"
    result = train(tiny_config(out, epochs=8, augment="none"), shifted)
    assert result.best_val_accuracy > 0.8  # it really learned the shifted task
    return out


def _agreement(run_dir, teacher_dir, dataset) -> float:
    val = dataset.images[dataset.splits == "val"]
    student = Predictor.load(run_dir, device="cpu").predict_proba(val).argmax(1)
    teacher = Predictor.load(teacher_dir, device="cpu").predict_proba(val).argmax(1)
    return float((student == teacher).mean())


def test_a_distilled_student_follows_its_teacher(tmp_path, dataset, shifted_teacher):
    plain = train(tiny_config(tmp_path / "plain", epochs=6, augment="none", seed=1), dataset)
    taught = train(tiny_config(tmp_path / "taught", epochs=6, augment="none", seed=1,
                               teacher=str(shifted_teacher), distill_weight=1.0,
                               distill_temperature=2.0), dataset)
    a_plain = _agreement(plain.run_dir, shifted_teacher, dataset)
    a_taught = _agreement(taught.run_dir, shifted_teacher, dataset)
    assert a_taught > 0.7 and a_taught > a_plain + 0.5, (a_plain, a_taught)
    ckpt = load_checkpoint(taught.best_checkpoint)
    assert ckpt["teacher"]["path"].endswith("best.pt") and len(ckpt["teacher"]["digest"]) == 32
    assert ckpt["config"]["teacher"] == str(shifted_teacher)


@pytest.mark.parametrize("mix", ["none", "cutmix"])
def test_fixed_targets_carry_the_teacher_into_the_student(tmp_path, dataset, shifted_teacher,
                                                          mix):
    """--distill-targets fixed: targets computed once per clean face still carry the teacher's
    label-contradicting answers into the student (a plain student agrees with it on 0% of val).
    They are flip-averaged, which softens them on these asymmetric synthetic faces, hence the
    lower bar than for live targets. With --mix the targets of two faces are blended in the
    images' shares (half the batches here)."""
    taught = train(tiny_config(tmp_path / "fixed", epochs=6, augment="none", seed=1,
                               teacher=str(shifted_teacher), distill_weight=1.0,
                               distill_temperature=2.0, distill_targets="fixed", mix=mix,
                               mix_prob=0.5), dataset)
    assert _agreement(taught.run_dir, shifted_teacher, dataset) > 0.4
    assert taught.teacher_seconds > 0  # computed once, before the first epoch
    assert load_checkpoint(taught.best_checkpoint)["config"]["distill_targets"] == "fixed"


def test_fixed_targets_are_flip_averaged_log_probabilities(dataset, shifted_teacher):
    teacher = Teacher.load(str(shifted_teacher), torch.device("cpu"), FP32, CLASSES)
    faces = torch.from_numpy(dataset.images[:16])
    probs = Predictor.load(shifted_teacher, device="cpu").predict_proba(dataset.images[:16],
                                                                         tta="flip")
    targets = teacher.fixed_targets(faces, FP32)
    assert targets.shape == (16, 7)
    assert torch.allclose(targets.exp(), torch.as_tensor(probs), atol=1e-5)


def test_an_ensemble_teacher_works(tmp_path, dataset, shifted_teacher):
    save_ensemble([shifted_teacher, shifted_teacher], tmp_path / "ens.pt")
    taught = train(tiny_config(tmp_path / "taught", epochs=4, augment="none",
                               teacher=str(tmp_path / "ens.pt"), distill_weight=1.0), dataset)
    assert _agreement(taught.run_dir, shifted_teacher, dataset) > 0.5


def test_distill_loss_is_t2_scaled_kl():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    T = 3.0
    p_t = (t / T).softmax(1)
    kl = (p_t * (p_t.log() - (s / T).log_softmax(1))).sum(1).mean() * T * T
    assert torch.allclose(distill_loss(s, t, T), kl, atol=1e-6)
    assert distill_loss(t, t, T).abs() < 1e-6


def test_resume_needs_the_same_teacher(tmp_path, dataset, shifted_teacher):
    import shutil

    teacher = tmp_path / "teacher.pt"
    shutil.copy(shifted_teacher / "best.pt", teacher)

    class Stop(Exception):
        pass

    def stop(m):
        raise Stop

    with pytest.raises(Stop):
        train(tiny_config(tmp_path / "run", epochs=3, teacher=str(teacher)), dataset,
              on_epoch=stop)
    shutil.copy(shifted_teacher / "last.pt", teacher)  # another file under the same name
    with pytest.raises(ModelError, match="resume needs the same teacher"):
        train(TrainConfig(out=str(tmp_path / "run"), resume=True, device="cpu", threads=1),
              dataset)


@pytest.mark.parametrize("field,value", [("distill_weight", 1.5), ("distill_temperature", 0),
                                         ("distill_targets", "cached")])
def test_bad_distillation_options(field, value):
    with pytest.raises(ConfigError):
        TrainConfig(**{field: value}).validated()


def test_a_missing_teacher_is_a_model_error(tmp_path, dataset):
    with pytest.raises(ModelError, match="no-such-teacher"):
        train(tiny_config(tmp_path / "r", teacher=str(tmp_path / "no-such-teacher")), dataset)

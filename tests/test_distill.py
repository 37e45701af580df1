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


def test_a_resumed_views_run_ends_exactly_like_an_uninterrupted_one(tmp_path, dataset,
                                                                  shifted_teacher):
    """The views are rebuilt from the seed on --resume, and the draw of a view per face
    continues where it stopped."""
    options = dict(epochs=3, augment="strong", teacher=str(shifted_teacher),
                   distill_targets="views", distill_views=2)
    full = train(tiny_config(tmp_path / "full", **options), dataset)

    class Stop(Exception):
        pass

    def stop_after_2(m):
        if m.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(tiny_config(tmp_path / "cut", **options), dataset, on_epoch=stop_after_2)
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, device="cpu",
                                threads=1), dataset)
    w_full = load_checkpoint(full.run_dir / "last.pt")["state_dict"]
    w_resumed = load_checkpoint(resumed.run_dir / "last.pt")["state_dict"]
    assert all(torch.equal(w_full[k], w_resumed[k]) for k in w_full)


@pytest.mark.parametrize("field,value", [("distill_weight", 1.5), ("distill_temperature", 0),
                                         ("distill_targets", "cached")])
def test_bad_distillation_options(field, value):
    with pytest.raises(ConfigError):
        TrainConfig(**{field: value}).validated()


def test_a_missing_teacher_is_a_model_error(tmp_path, dataset):
    with pytest.raises(ModelError, match="no-such-teacher"):
        train(tiny_config(tmp_path / "r", teacher=str(tmp_path / "no-such-teacher")), dataset)


def test_view_targets_carry_the_teacher_into_the_student(tmp_path, dataset, shifted_teacher):
    """--distill-targets views, end to end: the teacher's answers reach the student (a plain
    student agrees with this label-contradicting teacher on 0% of val). Without augmentation,
    so the bar does not hang on how this teacher, trained on clean faces, answers on shifted
    ones; the next test checks that views are augmented and labelled on themselves."""
    taught = train(tiny_config(tmp_path / "views", epochs=6, augment="none", seed=1,
                               teacher=str(shifted_teacher), distill_weight=1.0,
                               distill_temperature=2.0, distill_targets="views",
                               distill_views=3), dataset)
    assert _agreement(taught.run_dir, shifted_teacher, dataset) > 0.4
    assert taught.teacher_seconds > 0
    config = load_checkpoint(taught.best_checkpoint)["config"]
    assert config["distill_targets"] == "views" and config["distill_views"] == 3


def test_views_are_seeded_augmented_and_labelled_on_themselves(dataset, shifted_teacher):
    from ferkit.training.augment import BatchAugment
    from ferkit.training.distill import TeacherViews

    teacher = Teacher.load(str(shifted_teacher), torch.device("cpu"), FP32, CLASSES)
    faces = torch.from_numpy(dataset.images[:20]).unsqueeze(1)
    augment = BatchAugment(TrainConfig(augment="strong", aug_flip=0.0).validated())
    a = TeacherViews.make(teacher, faces, augment, 3, seed=5, precision=FP32, batch_size=8)
    b = TeacherViews.make(teacher, faces, augment, 3, seed=5, precision=FP32, batch_size=8)
    c = TeacherViews.make(teacher, faces, augment, 3, seed=6, precision=FP32, batch_size=8)
    assert a.images.shape == (3, 20, 1, 48, 48) and a.images.dtype == torch.uint8
    assert a.targets.shape == (3, 20, 7)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert not torch.equal(a.images[0], a.images[1])  # K different views, not K copies
    assert not torch.equal(a.images[0], faces)
    assert torch.allclose(a.targets[1], teacher.fixed_targets(a.images[1], FP32))
    images, targets = a.batch(torch.arange(20))
    views = [next(k for k in range(3) if torch.equal(images[i], a.images[k, i]))
             for i in range(20)]  # each row is one of the face's own views ...
    assert all(torch.equal(targets[i], a.targets[v, i]) for i, v in enumerate(views))  # its answer


@pytest.mark.parametrize("mode", ["none", "live", "fixed", "views"])
def test_distill_targets_give_each_mode_its_targets(dataset, shifted_teacher, mode):
    """DistillTargets.build, per step: the student's batch and the teacher's targets on it, as
    the loop used to compute them inline. fixed: the teacher's flip-averaged log-probabilities
    of the clean faces, indexed by idx; views: one stored view of each face with the answer on
    that view; live: the teacher's logits on the batch itself; mixed stored targets are blended
    as the images were."""
    from ferkit.training.augment import BatchAugment
    from ferkit.training.distill import DistillTargets
    from ferkit.training.mixing import Mix

    config = TrainConfig(augment="strong", aug_flip=0.0, seed=3, distill_views=2,
                         teacher=str(shifted_teacher) if mode != "none" else "",
                         distill_targets=mode if mode != "none" else "live").validated()
    faces = torch.from_numpy(dataset.images[:20]).unsqueeze(1)
    targets = DistillTargets.build(config, faces, fill=0.5, precision=FP32, batch_size=8)
    augment = BatchAugment(config, fill=0.5)
    idx = torch.tensor([3, 0, 7, 7, 19])
    torch.manual_seed(0)
    x, stored = targets.inputs(idx, faces, augment)
    got = targets.targets(x, None, stored)
    assert x.shape == (5, 1, 48, 48) and x.dtype == torch.float32
    if mode != "views":  # the run's own augmentation of faces[idx]
        torch.manual_seed(0)
        assert torch.equal(x, augment(faces[idx], train=True))

    if mode == "none":
        assert targets.teacher is None and got is None and targets.checkpoint_entries() == {}
        return
    teacher = Teacher.load(str(shifted_teacher), torch.device("cpu"), FP32, CLASSES)
    assert targets.checkpoint_entries() == {"teacher": teacher.record()}
    if mode == "live":
        assert stored is None and targets.seconds < 1.0
        assert torch.equal(got, teacher.logits(x, FP32))
        return
    assert targets.seconds > 0  # computed before the first step
    if mode == "fixed":
        assert torch.allclose(got, teacher.fixed_targets(faces, FP32)[idx], atol=1e-6)
    else:  # views: each row one of its face's stored views (flip 0 here), with its answer
        views = targets.views
        assert views.images.shape == (2, 20, 1, 48, 48)
        for row, i in enumerate(idx):
            k = next(k for k in range(2)
                     if torch.equal(x[row].mul(255).round(), views.images[k, i].float()))
            assert torch.equal(got[row], views.targets[k, i])
    mix = Mix(torch.tensor([1, 0, 3, 2, 4]), 0.25)
    assert torch.equal(targets.targets(x, mix, stored), mix.log_probs(stored))

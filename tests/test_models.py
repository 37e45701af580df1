"""The model zoo: every entry builds, trains a step, round-trips a checkpoint; `ferkit models`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ferkit.classes import CLASSES
from ferkit.errors import ModelError
from ferkit.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from ferkit.models.info import count_flops, count_parameters, weight_bytes
from ferkit.models.registry import create_model, get_entry, list_models

# The zoo this file owns, with the parameter count each must stay within (7 classes).
PARAM_BANDS = {
    "shallow-cnn": (4_000_000, 5_500_000),
    "deep-cnn": (3_500_000, 5_000_000),
    "cnn4": (400_000, 800_000),
    "vgg1": (2_000_000, 2_800_000),
    "vgg2": (1_000_000, 1_500_000),
    "vgg3": (700_000, 1_100_000),
    "resnet": (10_000_000, 12_500_000),
    "inception": (500_000, 2_000_000),
    "mini-xception": (50_000, 70_000),
    "ferkit-vgg": (4_000_000, 6_000_000),
    "ferkit-small": (300_000, 1_500_000),
}
ALL = [e.name for e in list_models()]
BIG = 30_000_000  # other files' giants (e.g. vgg16) get only the cheap checks here


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batches of 1-2 faces gain nothing from a second thread, and lose much on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name: str, small_only: bool = False, **kwargs) -> nn.Module:
    """The model, or a skip when this install lacks its optional package (or, with small_only,
    when it is too big for a quick test: sized on the meta device first, which costs nothing)."""
    try:
        if small_only:
            with torch.device("meta"):
                if count_parameters(create_model(name, **kwargs)) > BIG:
                    pytest.skip("very large model: covered by its own tests")
        return create_model(name, **kwargs)
    except ModelError as exc:
        if "pip install" in str(exc):
            pytest.skip(str(exc))
        raise


def test_zoo_is_registered():
    assert set(PARAM_BANDS) <= set(ALL)
    for name in ALL:
        entry = get_entry(name)
        assert entry.description, f"{name}: factory docstring gives no one-line description"
        assert isinstance(entry.reported, str)


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes(name):
    torch.manual_seed(0)
    model = build(name, small_only=True)
    model.train()
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, len(CLASSES))  # BN in train mode, B=2
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 48, 48))
    assert out.shape == (1, len(CLASSES)) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(PARAM_BANDS))
def test_num_classes(name):
    model = build(name, num_classes=3).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 48, 48)).shape == (1, 3)


@pytest.mark.parametrize("name", ALL)
def test_one_training_step(name):
    torch.manual_seed(0)
    model = build(name, small_only=True)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(2, 1, 48, 48), torch.tensor([0, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    params = list(model.parameters())
    changed = [not torch.equal(b, p) for b, p in zip(before, params, strict=True)]
    assert changed[0] and changed[-1], f"{name}: the first or last layer did not move"
    for moved, p in zip(changed, params, strict=True):  # zero-init residual BNs may hold others
        assert moved or not p.grad.any(), f"{name}: a parameter with a gradient did not move"


@pytest.mark.parametrize("name", sorted(PARAM_BANDS))
def test_parameter_bands(name):
    lo, hi = PARAM_BANDS[name]
    n = count_parameters(build(name))
    assert lo <= n <= hi, f"{name}: {n:,} parameters, expected {lo:,}..{hi:,}"


def test_mini_xception_matches_the_fer_package():
    # Keras reports 58,423 for the fer package's model: 56,951 trainable + 1,472 BN statistics.
    model = create_model("mini-xception")
    assert count_parameters(model) == 56_951
    n_stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert count_parameters(model) + n_stats == 58_423


def test_ferkit_small_fits_the_default_model_budget():
    model = create_model("ferkit-small")
    assert count_parameters(model) <= 1_500_000
    assert weight_bytes(model) <= 6_000_000
    assert count_flops(model) < 60e6  # per face; see bench/zoo_speed.py for faces/s


@pytest.mark.parametrize("name,kwargs", [(n, {}) for n in ALL] + [
    ("ferkit-small", {"width": 16}), ("ferkit-small", {"width": 8, "head": "flatten",
                                                        "stem_convs": 2}),
    ("ferkit-vgg", {"width": 8, "convs_per_stage": 1}),
])
def test_checkpoint_round_trip(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = build(name, small_only=True, **kwargs)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 48, 48))  # move the BN running statistics off their defaults
    model.eval()
    pixels = torch.rand(2, 1, 48, 48)
    with torch.inference_mode():
        expected = model((pixels - 0.5) / 0.25)
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"arch": name, "arch_kwargs": kwargs, "classes": list(CLASSES),
                           "normalization": {"mean": 0.5, "std": 0.25},
                           "state_dict": model.state_dict()})  # the version-1 layout
    rebuilt = build_model(load_checkpoint(path))  # takes pixels, normalises inside
    assert not rebuilt.training
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(pixels), expected, rtol=1e-5, atol=1e-6)


def test_ferkit_small_heads_and_stem():
    gap, flat = create_model("ferkit-small", width=8), create_model("ferkit-small", width=8,
                                                                    head="flatten")
    assert count_parameters(flat) - count_parameters(gap) == 8 * 8 * 7 * 8  # 9 cells, not 1
    deeper = create_model("ferkit-small", width=8, stem_convs=3)
    assert count_parameters(deeper) - count_parameters(gap) == 2 * (8 * 8 * 9 + 2 * 8)
    for kwargs, words in [({"head": "dense"}, "head must be one of"),
                          ({"stem_convs": 0}, "stem_convs must be at least 1")]:
        with pytest.raises(ValueError, match=words):
            create_model("ferkit-small", **kwargs)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelError) as info:
        create_model("no-such-net")
    message = str(info.value)
    assert "no-such-net" in message
    for name in ("ferkit-small", "mini-xception", "resnet"):
        assert name in message


def test_count_flops_and_parameters():
    conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
    assert count_flops(conv) == 2 * 8 * 9 * 48 * 48  # a multiply-add counts 2
    assert count_parameters(conv) == 8 * 9
    net = nn.Sequential(nn.Flatten(), nn.Linear(48 * 48, 10))
    assert count_flops(net, (4, 1, 48, 48)) == 4 * 2 * 48 * 48 * 10


def test_count_flops_restores_training_mode():
    model = create_model("ferkit-small").train()
    count_flops(model)
    assert model.training


@pytest.fixture(scope="module")
def cli_json_rows() -> list[dict]:
    from ferkit.cli.app import app

    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_models_cli_json_lists_every_entry(cli_json_rows):
    assert sorted(r["name"] for r in cli_json_rows) == sorted(ALL)
    for row in cli_json_rows:
        assert {"name", "params", "flops", "mflops", "weights_mb", "reported",
                "description"} <= set(row)


def test_model_table_figures(cli_json_rows):
    rows = {r["name"]: r for r in cli_json_rows}
    for name in PARAM_BANDS:
        row = rows[name]
        assert row["params"] == count_parameters(create_model(name))
        assert row["flops"] > 0 and row["mflops"] == round(row["flops"] / 1e6, 2)
        assert 0 < row["weights_mb"] < 100
    assert rows["mini-xception"]["reported"].startswith("65.9%")
    assert rows["ferkit-small"]["weights_mb"] <= 6
    own = [r["name"].startswith("ferkit-") for r in cli_json_rows]
    assert own == sorted(own), "ferkit's own models are listed last"


@pytest.mark.parametrize("columns", [80, 200])
def test_models_cli_table_shows_every_description_whole(cli_json_rows, columns):
    """At 80 columns the descriptions leave the table rather than wrap a word a line."""
    from ferkit.cli.app import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= columns for line in result.output.splitlines())
    words = " ".join(result.output.replace("│", " ").split())
    assert "MFLOPs" in words and "…" not in words
    for row in cli_json_rows:
        assert row["name"] in words
        assert " ".join(row["description"].split()) in words, row["name"]
        if row["reported"]:
            assert row["reported"] in words, row["name"]


def test_a_model_description_is_its_docstrings_whole_first_paragraph():
    from ferkit.models.registry import get_entry

    assert get_entry("vgg3").description.endswith("dense head of 128.")


def test_models_cli_help():
    from ferkit.cli.app import app

    help_text = CliRunner().invoke(app, ["models", "--help"]).output
    assert "ferkit models --json" in help_text and "multiply-add" in help_text

"""The weights' EMA: its decay warms up, so a short run's average is not its initial weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferkit.training.ema import warmed_up_decay, weight_ema


def test_the_decay_warms_up_to_the_configured_one():
    assert warmed_up_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_up_decay(0.999, 100_000) == 0.999
    assert warmed_up_decay(0.5, 10) == 0.5  # 11/20 is past it


def test_a_short_run_average_follows_the_model_not_its_initial_weights():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = weight_ema(model, 0.999)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the model moves away from where the average started
        model[1].running_mean.fill_(2.0)
    for _ in range(200):  # one FER2013 epoch at batch 128
        ema.update_parameters(model)
    for avg, cur in zip(ema.module.parameters(), model.parameters(), strict=True):
        # a plain EMA at 0.999 would still be 82% the start, 0.82 from the model
        assert (avg - cur).abs().max() < 0.1
    assert ema.module[1].running_mean.sub(2.0).abs().max() < 0.2  # buffers too
    assert int(ema.n_averaged) == 200

"""EMA of weights against hand computation; swap-in; state round trip."""
import pytest
import torch
from torch import nn

from onetok.training.ema import EMA


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.fixed = nn.Parameter(torch.tensor([5.0]), requires_grad=False)


def test_decay_schedule_by_hand():
    ema = EMA(Two(), decay=0.999)
    assert ema.decay(1) == 0.0  # first update: the shadow becomes the weights
    assert ema.decay(2) == pytest.approx(2 / 11)
    assert ema.decay(3) == pytest.approx(3 / 12)
    assert ema.decay(100_000) == 0.999


def test_updates_by_hand():
    model = Two()
    ema = EMA(model, decay=0.5)
    values = [torch.tensor([3.0, 4.0]), torch.tensor([7.0, 0.0]), torch.tensor([1.0, 1.0])]
    expected = torch.tensor([1.0, 2.0])
    for n, value in enumerate(values, start=1):
        with torch.no_grad():
            model.w.copy_(value)
            model.fixed.add_(1.0)
        ema.update(model)
        decay = 0.0 if n == 1 else min(0.5, n / (9 + n))
        expected = decay * expected + (1 - decay) * value
        assert torch.allclose(ema.shadow["w"], expected)
        assert torch.equal(ema.shadow["fixed"], model.fixed)  # no grad: copied, not averaged
    assert ema.num_updates == 3


def test_swap_in_restores_trained_weights():
    model = Two()
    ema = EMA(model)
    ema.shadow["w"] = torch.tensor([9.0, 9.0])
    with ema.swap_in(model):
        assert torch.equal(model.w, torch.tensor([9.0, 9.0]))
    assert torch.equal(model.w, torch.tensor([1.0, 2.0]))
    assert model.w.requires_grad


def test_state_dict_round_trip_and_mismatch():
    model = Two()
    ema = EMA(model, decay=0.9)
    ema.update(model)
    ema.shadow["w"].fill_(3.0)
    other = EMA(Two(), decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.max_decay == 0.9
    assert torch.equal(other.shadow["w"], torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(2, 2)).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)

"""Warmup + cosine schedule against hand computation, and AdamW weight-decay grouping."""
import math

import pytest
import torch
from torch import nn

from onetok.training.config import OptimizerConfig
from onetok.training.schedule import WarmupCosine, build_optimizer, build_scheduler, param_groups


def test_schedule_values_by_hand():
    s = WarmupCosine(base_lr=1e-4, end_lr=1e-5, warmup_steps=10, total_steps=110)
    assert s.lr(0) == 0.0
    assert s.lr(5) == pytest.approx(0.5e-4)
    assert s.lr(10) == pytest.approx(1e-4)
    # halfway through the cosine: end + (base - end) / 2
    assert s.lr(60) == pytest.approx(1e-5 + 0.5 * 9e-5)
    # a quarter of the way: cos(pi/4)
    assert s.lr(35) == pytest.approx(1e-5 + 9e-5 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.lr(110) == pytest.approx(1e-5)
    assert s.lr(500) == pytest.approx(1e-5)  # stays at the end value past the last step


def test_scheduler_drives_the_optimizer_and_round_trips():
    model = nn.Linear(3, 3)
    opt = build_optimizer(model, OptimizerConfig(lr=2e-4, weight_decay=0.1))
    sched = build_scheduler(opt, warmup_steps=4, total_steps=20, end_lr=2e-5)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:5] == pytest.approx([0.0, 0.5e-4, 1e-4, 1.5e-4, 2e-4])
    assert all(g["lr"] == opt.param_groups[0]["lr"] for g in opt.param_groups)

    opt2 = build_optimizer(model, OptimizerConfig(lr=2e-4, weight_decay=0.1))
    sched2 = build_scheduler(opt2, warmup_steps=99, total_steps=999, end_lr=0.0)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.latent_tokens = nn.Parameter(torch.zeros(4, 8))
        self.mask_token = nn.Parameter(torch.zeros(1, 8))
        self.patch_embed = nn.Conv2d(3, 8, 2)
        self.embedding = nn.Embedding(10, 8)
        self.ln_pre = nn.LayerNorm(8)
        self.norm = nn.GroupNorm(2, 8)
        self.gamma = nn.Parameter(torch.ones(8, 8))
        self.c_fc = nn.Linear(8, 32)
        self.frozen = nn.Linear(8, 8).requires_grad_(False)


def test_weight_decay_groups_follow_the_reference_rules():
    model = Named()
    decay, no_decay = param_groups(model, weight_decay=0.03)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.03 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["c_fc.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted([
        "latent_tokens", "mask_token", "patch_embed.weight", "patch_embed.bias", "embedding.weight",
        "ln_pre.weight", "ln_pre.bias", "norm.weight", "norm.bias", "gamma", "c_fc.bias"])


def test_no_trainable_parameters_is_a_clear_error():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), OptimizerConfig())

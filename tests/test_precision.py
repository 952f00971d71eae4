"""Precision names, the 'auto' choice, and what autocast does (and does not) lower to bf16."""
import contextlib

import pytest
import torch
import torch.utils._python_dispatch

from onetok import precision
from onetok.models.quantizers import VectorQuantizer
from onetok.errors import PrecisionError
from onetok.precision import autocast, has_fast_bf16, resolve_precision


@pytest.mark.parametrize("flags, expected", [("fpu sse avx2", "fp32"), ("avx512f avx512_bf16", "bf16"),
                                             ("amx_tile amx_bf16", "bf16"), ("", "fp32")])
def test_auto_picks_bf16_only_with_fast_bf16_hardware(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    assert resolve_precision("auto", "cpu") == expected


def test_explicit_names_and_aliases_pass_through(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: "")
    assert [resolve_precision(p) for p in ("fp32", "bf16", "float32", "bfloat16")] == ["fp32", "bf16", "fp32", "bf16"]


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None])
def test_bad_precision_name_is_a_clear_error(bad):
    with pytest.raises(PrecisionError, match=r"precision must be one of auto, fp32, bf16, int8, onnx, onnx-int8.*got"):
        resolve_precision(bad)
    with pytest.raises(ValueError):
        autocast(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_no_fast_bf16_on_cuda_without_a_gpu():
    assert not has_fast_bf16("cuda")


def test_autocast_lowers_matmuls_only_for_bf16():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with autocast("fp32"):
        assert layer(x).dtype == torch.float32
    with autocast("bf16"):
        assert layer(x).dtype == torch.bfloat16


def test_quantizer_search_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(4096, 12, use_l2_norm=True)
    torch.nn.init.normal_(quantizer.embedding.weight)
    z = torch.randn(4, 12, 1, 32)
    expected_z, expected = quantizer(z)
    with autocast("bf16"):
        z_quantized, result = quantizer(z)
    assert z_quantized.dtype == torch.float32
    assert torch.equal(result["min_encoding_indices"], expected["min_encoding_indices"])
    assert torch.equal(z_quantized, expected_z)


def test_int8_is_an_explicit_choice_that_the_rule_never_makes(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: "avx512_vnni avx512_bf16 amx_int8")
    assert resolve_precision("int8") == "int8"
    assert resolve_precision("auto") == "bf16"
    layer = torch.nn.Linear(8, 8)
    with autocast("int8"):  # what int8 Linear layers leave runs in bf16 where bf16 is native
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_flags", lambda: "avx2")
    with autocast("int8"):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


class WeightCasts(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the casts autocast makes of one tensor."""

    def __init__(self, weight):
        super().__init__()
        self.weight, self.count = weight, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0] is self.weight:
            self.count += 1
        return func(*args, **(kwargs or {}))


def run_three_steps(layer, x):
    outs = []
    for _ in range(3):
        with autocast("bf16"):
            outs.append(layer(x))
    return torch.stack(outs)


def test_kept_weight_casts_cast_each_weight_once_for_many_autocast_blocks():
    layer, x = torch.nn.Linear(16, 16), torch.randn(4, 16)
    with WeightCasts(layer.weight) as per_block:
        expected = run_three_steps(layer, x)
    with WeightCasts(layer.weight) as kept, precision.kept_weight_casts("bf16"):
        got = run_three_steps(layer, x)
        assert not torch.is_autocast_enabled("cpu")  # nothing between the inner blocks is lowered
    assert (per_block.count, kept.count) == (3, 1)
    assert torch.equal(got, expected)
    with WeightCasts(layer.weight) as after:
        run_three_steps(layer, x)
    assert after.count == 3  # the cache ends with the block
    assert isinstance(precision.kept_weight_casts("fp32"), contextlib.nullcontext)


def test_bf16_generation_with_kept_casts_samples_what_per_step_casts_sample(monkeypatch):
    from onetok import MaskGIT
    from onetok.models import maskgit

    generator = MaskGIT.from_config("generator_titok_tiny").eval()
    classes = torch.tensor([1, 2, 3])
    torch.manual_seed(3)
    kept = generator.generate(classes, num_sample_steps=6, precision="bf16")
    monkeypatch.setattr(maskgit, "kept_weight_casts", lambda *a: contextlib.nullcontext())
    torch.manual_seed(3)
    assert torch.equal(kept, generator.generate(classes, num_sample_steps=6, precision="bf16"))

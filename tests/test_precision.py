"""Precision names, the 'auto' choice, and what autocast does (and does not) lower to bf16."""
import pytest
import torch

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

"""The fast inference path computes the same functions (golden tiny fixtures, real photos)."""
import pytest
import torch
from PIL import Image

from onetok import MaskGIT
from onetok.data.images import load_image, pil_to_tensor, resize_center_crop
from onetok.fast import optimize_for_inference
from onetok.precision import autocast

from .golden import TOL, VQGAN_PIXELS_TOL, assert_close, build, load_fixture

# bf16 keeps 8 significant bits; a ~30-convolution pixel decoder with the fixtures' unit-scale
# random weights ends about 3% (relative) from float32, i.e. 35 dB; a wrong fast path lands near 10 dB
MIN_PSNR = {"titok_vq_twostage": 33.0, "titok_vq_pixel": 38.0}
MIN_TOKEN_AGREEMENT = 0.97


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1.0 / (a.float() - b.float()).pow(2).mean())).item()


@pytest.fixture(scope="module")
def photos_at(golden_images, sample_photos):
    """Real photos resized and center-cropped to a fixture's crop size."""

    def at(size: int) -> torch.Tensor:
        images = [load_image(p, size) for p in golden_images]
        images += [pil_to_tensor(resize_center_crop(Image.fromarray(a), size)) for a in sample_photos]
        return torch.stack(images)

    return at


def _fast_copy(meta, weights, kind):
    return optimize_for_inference(build(meta, weights, kind))


@pytest.mark.parametrize("name", ["titok_vq_twostage", "titok_vq_pixel"])
def test_channels_last_float32_still_matches_reference(golden_dir, name):
    meta, weights, io = load_fixture(golden_dir, name)
    model = _fast_copy(meta, weights, "titok")
    with torch.no_grad():
        assert torch.equal(model.tokenize(io["pixel_values"]), io["token_ids"].flatten(1))
        tol = VQGAN_PIXELS_TOL if name == "titok_vq_twostage" else TOL
        assert_close(model.decode_tokens(io["token_ids"]), io["decode_tokens"], tol)


@pytest.mark.parametrize("name", ["titok_vq_twostage", "titok_vq_pixel"])
def test_bf16_tokenizer_agrees_with_float32_on_real_photos(golden_dir, photos_at, name):
    meta, weights, _ = load_fixture(golden_dir, name)
    reference, fast = build(meta, weights, "titok"), _fast_copy(meta, weights, "titok")
    photos = photos_at(reference.config.crop_size)
    ids = reference.tokenize(photos)
    images = reference.detokenize(ids)
    with autocast("bf16"):
        fast_ids = fast.tokenize(photos)
        fast_images = fast.detokenize(ids)
    assert fast_images.dtype == torch.float32 and fast_images.shape == images.shape
    assert (fast_ids == ids).float().mean().item() >= MIN_TOKEN_AGREEMENT
    assert psnr(fast_images, images) >= MIN_PSNR[name]


@pytest.mark.parametrize("name", ["imagebert", "uvitbert"])
def test_bf16_generator_logits_within_bf16_tolerance(golden_dir, name):
    meta, weights, io = load_fixture(golden_dir, name)
    model = build(meta, weights, "maskgit")
    with torch.no_grad():
        expected = model(io["input_ids"], io["condition"], cond_drop_prob=0.0)
        with autocast("bf16"):
            logits = model(io["input_ids"], io["condition"], cond_drop_prob=0.0)
    assert logits.dtype == torch.bfloat16
    relative = (logits.float() - expected).norm() / expected.norm()
    assert relative.item() < 2e-2


@pytest.mark.parametrize("model_type", ["ViT", "UViT"])
@pytest.mark.parametrize("decay", ["constant", "linear", "power-cosine"])
def test_batched_guidance_samples_the_same_ids_in_float32(model_type, decay):
    tree = {"model": {"generator": {"model_type": model_type, "hidden_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "intermediate_size": 128, "image_seq_len": 16,
                                    "condition_num_classes": 10},
                      "vq_model": {"codebook_size": 64}}}
    model = MaskGIT.from_config(tree).eval()
    condition = torch.tensor([0, 3, 7, 9])
    samples = []
    for batched in (False, True):
        torch.manual_seed(1)
        samples.append(model.generate(condition, guidance_scale=3.0, guidance_decay=decay,
                                      randomize_temperature=2.0, num_sample_steps=6, batched_guidance=batched))
    assert torch.equal(samples[0], samples[1])
    assert (samples[0] < 64).all()  # no [MASK] left


def test_sampling_loop_never_reads_the_device(monkeypatch):
    """Only the argument check reads values back; the steps add no host-device synchronisation."""
    model = MaskGIT.from_config("generator_titok_tiny").eval()
    reads = []
    for method in ("__bool__", "__int__", "__float__", "__index__", "item", "tolist"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, **kwargs):
            reads.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    counts = []
    for steps in (2, 6):
        reads.clear()
        model.generate(torch.tensor([1, 2]), guidance_decay="power-cosine", num_sample_steps=steps)
        counts.append(len(reads))
    assert counts[0] == counts[1]


def test_precision_option_on_the_python_api(golden_images):
    from onetok import MaskGIT, TiTok
    from onetok.data.images import load_image

    torch.manual_seed(0)
    model = TiTok.from_config("titok_tiny").eval()
    images = torch.stack([load_image(p, 64) for p in golden_images])
    exact = model.tokenize(images)
    assert torch.equal(exact, model.tokenize(images, precision="fp32"))
    fast = model.tokenize(images, precision="bf16")
    assert fast.shape == exact.shape and fast.dtype == torch.long
    recon = model.detokenize(exact, precision="bf16")
    assert recon.dtype == torch.float32 and recon.shape == images.shape
    assert (recon - model.detokenize(exact)).abs().max() < 0.1

    generator = MaskGIT.from_config("generator_titok_tiny").eval()
    torch.manual_seed(3)
    ids = generator.generate(torch.tensor([1, 2]), num_sample_steps=4, precision="bf16")
    assert ids.shape == (2, 32) and int(ids.max()) < generator.config.codebook_size


@pytest.fixture
def fast():
    from onetok import fast

    if fast.malloc_bytes() is None:
        pytest.skip("needs glibc 2.33+ (mallopt and mallinfo2)")
    return fast


def mmapped_bytes_while_holding(fast, nbytes: int) -> int:
    """How many bytes glibc has mmapped while a fresh `nbytes` tensor is alive."""
    block = torch.empty(nbytes, dtype=torch.uint8)
    held = fast.malloc_bytes()[1]
    del block
    return held


def test_kept_heap_reuses_large_blocks_inside_and_gives_them_back_after(fast, monkeypatch):
    size = 96 * 2**20  # past glibc's 32 MiB mmap threshold
    with fast.kept_heap():
        pass  # leaves glibc's defaults and a trimmed heap
    assert mmapped_bytes_while_holding(fast, size) >= size
    with fast.kept_heap():
        assert mmapped_bytes_while_holding(fast, size) < size
        assert mmapped_bytes_while_holding(fast, size) < size  # the freed block is reused
    assert mmapped_bytes_while_holding(fast, size) >= size  # trimmed: the next one is mapped afresh
    monkeypatch.setenv(fast.KEEP_HEAP_ENV, "0")
    with fast.kept_heap():  # the opt-out leaves malloc alone
        assert mmapped_bytes_while_holding(fast, size) >= size

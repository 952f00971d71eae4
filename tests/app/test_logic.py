"""The functions behind the web demo, on real photos and tiny random models."""
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from onetok import Pipeline
from onetok.app import logic
from onetok.data.images import load_image, tensor_to_uint8


def jpeg_bytes(photo: np.ndarray, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=92, **save_args)
    return buffer.getvalue()


# ---------------------------------------------------------------- uploads


def test_upload_is_centre_cropped_like_the_library_loader(sample_photos, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(sample_photos[1]))
    image = logic.preprocess_upload(path, 64)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    torch.testing.assert_close(image, load_image(path, 64))
    assert logic.preprocess_upload(path.read_bytes(), 64).equal(image)  # bytes and paths alike


def test_non_image_upload_gets_a_readable_message(tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"%PDF-1.4 this is not a picture" * 10)
    with pytest.raises(logic.UploadError, match="not an image"):
        logic.preprocess_upload(path, 64)


def test_upload_over_the_size_limit_is_refused(sample_photos):
    data = jpeg_bytes(sample_photos[0])
    limit_mb = len(data) / 2**20 / 2
    with pytest.raises(logic.UploadError, match=r"the limit is .* MB"):
        logic.preprocess_upload(data, 64, max_mb=limit_mb)
    assert logic.preprocess_upload(data, 64, max_mb=limit_mb * 4).shape == (3, 64, 64)


def test_image_over_the_pixel_limit_is_refused(sample_photos):
    photo = sample_photos[0]
    with pytest.raises(logic.UploadError, match=f"{photo.shape[1]} x {photo.shape[0]} pixels"):
        logic.preprocess_upload(jpeg_bytes(photo), 64, max_pixels=photo.shape[0] * photo.shape[1] - 1)


def test_truncated_empty_and_missing_uploads(sample_photos, tmp_path):
    data = jpeg_bytes(sample_photos[2])
    with pytest.raises(logic.UploadError, match="damaged or truncated"):
        logic.preprocess_upload(data[: len(data) // 3], 64)
    with pytest.raises(logic.UploadError, match="empty"):
        logic.preprocess_upload(b"", 64)
    with pytest.raises(logic.UploadError, match="could not be read"):
        logic.preprocess_upload(tmp_path / "gone.jpg", 64)


def test_exif_rotation_is_applied(sample_photos):
    photo = sample_photos[3]  # rocket: portrait, so a wrong rotation changes the crop
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    rotated = logic.decode_image(jpeg_bytes(photo, exif=exif))
    plain = logic.decode_image(jpeg_bytes(photo))
    assert rotated.size == plain.size[::-1]


def test_rgba_and_grey_uploads_become_rgb(sample_photos):
    photo = sample_photos[1]
    for mode in ("RGBA", "L"):
        buffer = io.BytesIO()
        Image.fromarray(photo).convert(mode).save(buffer, format="PNG")
        assert logic.preprocess_upload(buffer.getvalue(), 32).shape == (3, 32, 32)


# ---------------------------------------------------------------- numbers shown in the page


def test_psnr():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert logic.psnr(a, a) == math.inf
    assert logic.psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert logic.psnr(a, a + 10) == pytest.approx(20 * math.log10(25.5), abs=1e-9)


@pytest.mark.parametrize(
    "tokens, codebook, expected",
    [(32, 4096, 48), (64, 4096, 96), (128, 4096, 192), (64, 8192, 104), (32, 256, 32), (3, 3, 1), (1, 2, 1)],
)
def test_bytes_per_image(tiny_tokenizer, tokens, codebook, expected):
    pipeline = Pipeline(tiny_tokenizer)
    config = pipeline.tokenizer.config
    saved = config.num_latent_tokens, config.codebook_size
    try:
        config.num_latent_tokens, config.codebook_size = tokens, codebook
        assert logic.bytes_per_image(pipeline) == expected
    finally:
        config.num_latent_tokens, config.codebook_size = saved


def test_token_grid_layout_and_positions():
    ids = list(range(100, 132))
    rows = logic.token_grid(ids)
    assert len(rows) == 4 and all(len(row) == 8 for row in rows)
    assert rows[2][5] == ids[logic.grid_position(2, 5, 32)] == 121
    ragged = logic.token_grid(list(range(10)))
    assert ragged[1] == [8, 9] + [None] * 6
    with pytest.raises(logic.TokenEditError, match="holds no token"):
        logic.grid_position(1, 2, 10)
    with pytest.raises(logic.TokenEditError):
        logic.grid_position(0, 8, 32)


# ---------------------------------------------------------------- token editing


def test_replace_token_changes_one_id_and_checks_ranges():
    ids = [5] * 32
    edited = logic.replace_token(ids, 7, 200, codebook_size=256)
    assert edited[7] == 200 and ids[7] == 5
    assert [i for i, (a, b) in enumerate(zip(ids, edited)) if a != b] == [7]
    with pytest.raises(logic.TokenEditError, match="position 32 is out of range: use 0 to 31"):
        logic.replace_token(ids, 32, 1, 256)
    with pytest.raises(logic.TokenEditError, match="id 256 is out of range: use 0 to 255"):
        logic.replace_token(ids, 0, 256, 256)
    with pytest.raises(logic.TokenEditError):
        logic.replace_token(ids, 0, -1, 256)


def test_randomise_tokens_changes_exactly_count_positions():
    ids = list(range(32))
    edited, positions = logic.randomise_tokens(ids, 5, codebook_size=64, seed=3)
    assert len(positions) == 5 == len(set(positions))
    assert [i for i in range(32) if edited[i] != ids[i]] == positions
    assert all(0 <= value < 64 for value in edited)
    assert logic.randomise_tokens(ids, 5, 64, seed=3) == (edited, positions)
    assert logic.randomise_tokens(ids, 5, 64, seed=4) != (edited, positions)
    with pytest.raises(logic.TokenEditError, match="1 to 32"):
        logic.randomise_tokens(ids, 33, 64, seed=0)


# ---------------------------------------------------------------- with a tokenizer


def test_reconstruct_a_real_photo(tiny_pipeline, sample_photos):
    size = tiny_pipeline.image_size
    image = logic.preprocess_upload(jpeg_bytes(sample_photos[0]), size)
    result = logic.reconstruct(tiny_pipeline, image)
    k = tiny_pipeline.num_tokens
    assert len(result.ids) == k and all(0 <= i < tiny_pipeline.codebook_size for i in result.ids)
    assert result.ids == tiny_pipeline.tokenize(image)[0].tolist()  # the precision rule of the CLI
    np.testing.assert_array_equal(result.input, tensor_to_uint8(image))
    assert result.output.shape == (size, size, 3) and result.output.dtype == np.uint8
    np.testing.assert_array_equal(result.output, logic.decode_ids(tiny_pipeline, result.ids))
    assert result.psnr == pytest.approx(logic.psnr(result.input, result.output))
    assert result.num_bytes == logic.bytes_per_image(tiny_pipeline)


def test_editing_tokens_changes_the_decoded_image(tiny_pipeline, golden_images):
    result = logic.reconstruct(tiny_pipeline, load_image(golden_images[0], tiny_pipeline.image_size))
    edited, _ = logic.randomise_tokens(result.ids, 8, tiny_pipeline.codebook_size, seed=0)
    assert not np.array_equal(logic.decode_ids(tiny_pipeline, edited), result.output)
    same = logic.replace_token(result.ids, 0, result.ids[0], tiny_pipeline.codebook_size)
    np.testing.assert_array_equal(logic.decode_ids(tiny_pipeline, same), result.output)


# ---------------------------------------------------------------- generation


def test_generate_grid_timing_and_progress(tiny_pipeline):
    calls = []
    settings = logic.GenerationSettings(class_id=1, guidance_scale=2.0, temperature=1.0, num_steps=4, seed=7, num_images=3)
    result = logic.generate(tiny_pipeline, settings, progress=lambda f, m: calls.append(f))
    size = tiny_pipeline.image_size
    assert len(result.images) == 3 and all(image.shape == (size, size, 3) for image in result.images)
    assert result.grid.shape == (size + 4, 3 * size + 8, 3)  # 2-pixel padding around and between
    assert result.seconds > 0
    assert calls == sorted(calls) and calls[-1] == 1.0 and len(calls) == 4


def test_same_seed_same_images_as_the_pipeline(tiny_pipeline):
    settings = logic.GenerationSettings(class_id=3, num_steps=4, seed=11, num_images=3)
    first = logic.generate(tiny_pipeline, settings)
    state = torch.random.get_rng_state()
    again = logic.generate(tiny_pipeline, settings)
    assert torch.random.get_rng_state().equal(state)  # the caller's random stream is left alone
    np.testing.assert_array_equal(first.grid, again.grid)
    # image i is the Pipeline's (and so `onetok generate`'s) sample i of the seed
    expected = tensor_to_uint8(tiny_pipeline.generate([3, 3, 3], seed=11, num_sample_steps=4))
    np.testing.assert_array_equal(np.stack(first.images), expected)
    other = logic.generate(tiny_pipeline, logic.GenerationSettings(3, num_steps=4, seed=12, num_images=1))
    assert not np.array_equal(other.images[0], first.images[0])


def test_unset_settings_are_the_generators_config(tiny_pipeline):
    config = tiny_pipeline.generator.config
    assert config.guidance_scale != 3.0  # the old hard-coded page default differs from the config
    default = logic.generate(tiny_pipeline, logic.GenerationSettings(2, seed=1, num_images=1))
    explicit = logic.generate(tiny_pipeline, logic.GenerationSettings(
        2, config.guidance_scale, config.randomize_temperature, config.num_steps, seed=1, num_images=1))
    np.testing.assert_array_equal(default.grid, explicit.grid)


@pytest.mark.parametrize(
    "changes, message",
    [({"class_id": 10}, "class 10 is out of range"), ({"num_images": 0}, "1 to 16 images"),
     ({"num_steps": 0}, "at least 1"), ({"temperature": -1.0}, "must not be negative")],
)
def test_generation_settings_are_checked(tiny_pipeline, changes, message):
    settings = logic.GenerationSettings(**{"class_id": 0, **changes})
    with pytest.raises(logic.GenerationError, match=message):
        logic.generate(tiny_pipeline, settings)

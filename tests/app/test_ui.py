"""The served app through Gradio's own client: every event, bad uploads, and the server surviving them."""

import numpy as np
import pytest
from PIL import Image

from onetok.app import logic
from onetok.app.models import load_models

from .conftest import free_port, need_module

need_module("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from onetok.app.ui import EDITED_CELL, serve  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations inside Gradio


@pytest.fixture(scope="module")
def client(checkpoint_folders):
    models = load_models(
        [checkpoint_folders["tokenizer_16"], checkpoint_folders["tokenizer_32"]], checkpoint_folders["generator"]
    )
    port = free_port()
    demo = serve(models, port=port, block=False)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


@pytest.fixture
def photo_file(sample_photos, tmp_path):
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_photos[1]).save(path, quality=92)
    return str(path)


def read_image(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_reconstruct_shows_crop_reconstruction_stats_and_grid(client, photo_file):
    crop, recon, stats, grid, edited, note, _count, gallery = reconstruct(client, photo_file)
    assert read_image(crop).shape == read_image(recon).shape == (64, 64, 3)
    assert "PSNR" in stats and "**32 bytes per image**" in stats
    # a sequence wrapped into rows: each row first names the token positions it holds
    assert [row[0] for row in grid["data"]] == ["0–7", "8–15", "16–23", "24–31"]
    assert all(len(row) == 9 for row in grid["data"])
    assert all(0 <= int(value) < 256 for row in grid["data"] for value in row[1:])
    assert [item["caption"].split(" · ")[0] for item in gallery] == ["input", "16 tokens", "32 tokens"]
    assert edited is None and note == ""


def test_switching_tokenizers_and_editing_tokens(client, photo_file):
    reconstruct(client, photo_file)
    _crop, recon16, stats, grid, *_ = client.predict("16 tokens · titok_tiny_16", api_name="/show_tokenizer")
    assert len(grid["data"]) == 2 and "16 tokens" in stats
    image, grid_after, note, = client.predict(0, 17, api_name="/replace_token")
    assert int(grid_after["data"][0][1]) == 17 and note.startswith("Token 0 set to 17.")
    highlighted = [(r, c) for r, row in enumerate(grid_after["metadata"]["styling"]) for c, style in enumerate(row)
                   if style == EDITED_CELL]
    assert highlighted == ([(0, 1)] if int(grid["data"][0][1]) != 17 else [])
    assert read_image(image).shape == (64, 64, 3)
    image, grid_random, note = client.predict(4, 1, api_name="/randomise_tokens")
    assert note.startswith("Randomised tokens ") and grid_random["data"] != grid_after["data"]
    image, grid_reset, note = client.predict(api_name="/undo_edits")
    assert grid_reset["data"] == grid["data"]
    assert np.array_equal(read_image(image), read_image(recon16))  # undone edits decode to the reconstruction


def test_budget_row_shows_every_prefix_with_bytes_and_psnr(client, photo_file):
    crop = reconstruct(client, photo_file)[0]
    row = client.predict(api_name="/budget_row")  # the 32-token tokenizer: 1, 2, 4, 8, 16, 32 tokens
    captions = [item["caption"] for item in row]
    assert [c.split(" · ")[:2] for c in captions] == [
        ["1 token", "1 B"], ["2 tokens", "2 B"], ["4 tokens", "4 B"], ["8 tokens", "8 B"], ["16 tokens", "16 B"],
        ["32 tokens", "32 B"]]
    last = read_image(row[-1]["image"])
    assert last.shape == (64, 64, 3)
    assert captions[-1].endswith(f"{logic.psnr(np.array(read_image(crop)), np.array(last)):.1f} dB")


def reconstruct(client, path: str) -> tuple:
    return client.predict(handle_file(path), "32 tokens · titok_tiny_32", api_name="/reconstruct")


@pytest.mark.parametrize(
    "payload, message",
    [(b"not an image at all" * 50, "not an image this app can read"), (b"", "the uploaded file is empty")],
)
def test_bad_uploads_get_a_readable_message_and_the_server_keeps_serving(client, tmp_path, photo_file, payload, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(payload)
    crop, recon, stats, grid, *_ = reconstruct(client, str(bad))
    assert stats.startswith("**Could not do that:** ") and message in stats
    assert crop is None and recon is None and grid["data"] in ([], [[""] * 8])
    assert "PSNR" in reconstruct(client, photo_file)[2]


def test_huge_image_is_refused_with_the_stated_limit(client, tmp_path):
    side = int(logic.MAX_UPLOAD_PIXELS**0.5) + 1
    path = tmp_path / "huge.png"
    Image.new("RGB", (side, side), (90, 120, 40)).save(path)  # a small file with too many pixels
    assert f"{side} x {side} pixels; the limit is 40 megapixels" in reconstruct(client, str(path))[2]


def test_editing_before_an_upload_says_what_to_do(client):
    fresh = Client(client.src, verbose=False)
    _image, _grid, note = fresh.predict(0, 1, api_name="/replace_token")
    assert note == "**Could not do that:** upload a photo first"


def test_generate_is_repeatable_and_reports_time(client):
    args = (2, 1.5, 1.0, 4, 5, 2)  # class, guidance, temperature, steps, seed, images
    first, stats = client.predict(*args, api_name="/generate")
    again, _ = client.predict(*args, api_name="/generate")
    assert read_image(first).shape == (64 + 4, 2 * 64 + 6, 3)
    assert np.array_equal(read_image(first), read_image(again))
    assert stats.startswith("2 images of **thing 2** in **") and stats.endswith(" s**")
    with pytest.raises(Exception, match="greater than maximum value 16"):  # the slider's own check
        client.predict(2, 1.5, 1.0, 4, 5, 17, api_name="/generate")

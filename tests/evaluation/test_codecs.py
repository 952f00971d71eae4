"""Codec baselines on a real photo: files within a byte budget, the smallest file, ThumbHash."""
import pytest
import torch

from onetok.data.images import load_image
from onetok.evaluation.codecs import CODECS, CodecSearch, available_codecs, thumbhash_reconstructions
from onetok.evaluation.image_metrics import psnr

EXAMPLES = "src/onetok/assets/examples"


@pytest.fixture(scope="module")
def photos():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / EXAMPLES
    return torch.stack([load_image(root / name, 64) for name in ("chelsea.jpg", "coffee.jpg")])


@pytest.mark.parametrize("name", [c.name for c in CODECS])
def test_largest_file_within_budget(photos, name):
    codecs = available_codecs()
    if name not in codecs.usable:
        pytest.skip(codecs.missing[name])
    search = CodecSearch(codecs.usable[name], photos)
    smallest = search.within(0)
    assert not smallest.within_budget.any()
    assert smallest.qualities == [codecs.usable[name].qualities[0]] * len(photos)
    budget = float(smallest.sizes.max()) * 3
    matched = search.within(budget)
    assert matched.within_budget.all() and (matched.sizes <= budget).all()
    assert (matched.sizes > smallest.sizes).all()  # the search used the room it had
    # one quality step higher no longer fits (or the top quality was reached)
    codec = codecs.usable[name]
    for i, quality in enumerate(matched.qualities):
        step = codec.qualities.index(quality) + 1
        if step < len(codec.qualities):
            assert len(codec.encode(search.images[i], codec.qualities[step])) > budget
    assert matched.images.shape == photos.shape
    assert (psnr(photos, matched.images) > psnr(photos, smallest.images)).all()


def test_thumbhash_decodes_to_a_blurred_photo(photos):
    pytest.importorskip("thumbhash")
    images, sizes = thumbhash_reconstructions(photos)
    assert images.shape == photos.shape and all(15 <= s <= 40 for s in sizes)
    # a blur of the photo, not noise: closer to its own photo than to the other one
    own = psnr(photos, images)
    swapped = psnr(photos, images.flip(0))
    assert (own > swapped).all()

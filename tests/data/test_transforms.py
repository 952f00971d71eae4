import pytest
import torch
from PIL import Image

from onetok.data.images import load_image, pil_to_tensor
from onetok.data.transforms import EvalTransform, TrainTransform, build_transform, sample_generator


@pytest.fixture
def photo(sample_photos):
    return Image.fromarray(sample_photos[0])  # astronaut, 512 x 512


@pytest.fixture
def wide_photo(sample_photos):
    return Image.fromarray(sample_photos[4])  # scikit-learn china, 640 x 427


@pytest.mark.parametrize("scale", [None, (0.3, 1.0)])
def test_train_transform_shape_range_and_replay(wide_photo, scale):
    transform = TrainTransform(64, scale=scale)
    a = transform(wide_photo, sample_generator(7, 3))
    b = transform(wide_photo, sample_generator(7, 3))
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.05
    assert torch.equal(a, b)
    others = [transform(wide_photo, sample_generator(7, p)) for p in range(4, 10)]
    assert any(not torch.equal(a, o) for o in others)


def test_global_seed_makes_unseeded_calls_repeatable(wide_photo):
    transform = TrainTransform(48, scale=(0.3, 1.0))
    torch.manual_seed(1)
    first = transform(wide_photo)
    torch.manual_seed(1)
    assert torch.equal(first, transform(wide_photo))


def test_center_crop_without_flip_equals_eval(wide_photo):
    train = TrainTransform(64, random_crop=False, random_flip=False)
    assert torch.equal(train(wide_photo, sample_generator(0, 0)), EvalTransform(64)(wide_photo))


def test_random_crop_is_a_crop_of_the_resized_image(photo):
    # shorter side resized to 80, then a 64 crop: the result must appear inside the resized image
    transform = TrainTransform(64, resize_shorter=80, random_flip=False)
    crop = transform(photo, sample_generator(0, 1))
    resized = pil_to_tensor(photo.resize((80, 80), Image.BICUBIC))
    windows = resized.unfold(1, 64, 1).unfold(2, 64, 1)  # (3, 17, 17, 64, 64)
    distances = (windows - crop[:, None, None]).abs().amax(dim=(0, 3, 4))
    assert distances.min() < 1e-6


def test_flip_happens_about_half_the_time(photo):
    transform = TrainTransform(32, random_crop=False)
    plain = EvalTransform(32)(photo)
    flips = sum(torch.equal(transform(photo, sample_generator(0, p)), plain.flip(-1)) for p in range(40))
    assert 8 <= flips <= 32


def test_eval_transform_matches_load_image(golden_images):
    path = golden_images[0]
    img = Image.open(path).convert("RGB")
    assert torch.equal(EvalTransform(128)(img), load_image(path, 128))


def test_bad_options_raise_value_error():
    with pytest.raises(ValueError, match="scale"):
        TrainTransform(64, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="smaller than the crop"):
        TrainTransform(64, resize_shorter=32)
    assert isinstance(build_transform(False, 64), EvalTransform)
    assert isinstance(build_transform(True, 64, scale=(0.3, 1)), TrainTransform)

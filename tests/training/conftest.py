"""Fixtures shared by the trainer tests."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import PhotoCrops  # noqa: E402


@pytest.fixture(scope="module")
def photos(sample_photos):
    """The test photos as random crops with flips: the toy task's dataset."""
    return PhotoCrops(sample_photos)

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def photo_folder(tmp_path, sample_photos) -> Path:
    """ImageFolder tree of the 6 sample photos (shrunk), classes 'a' (jpg) and 'b' (png, one nested)."""
    root = tmp_path / "photos"
    for i, array in enumerate(sample_photos):
        img = Image.fromarray(array)
        img.thumbnail((96, 96))
        folder = root / ("a" if i % 2 == 0 else "b")
        if i == 5:
            folder = folder / "nested"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"photo{i}.{'jpg' if i % 2 == 0 else 'png'}")
    return root

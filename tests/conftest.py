"""Shared test fixtures: where ../shared lives, real photos, tiny models."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONETOK_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
IN_CI = os.environ.get("CI", "").lower() == "true"
# precision "auto" follows the documented rule in tests (and in the commands they run), so ids do not
# depend on timings; tests/test_backends.py turns the measured probe on where it tests it
os.environ["ONETOK_AUTO_PROBE"] = "0"


def need_path(path: Path) -> Path:
    """Return path, or skip (locally) / fail (under CI=true) when it is absent."""
    if path.exists():
        return path
    msg = f"fixture {path} is missing (../shared is not beside the checkout)"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return need_path(GOLDEN)


@pytest.fixture(scope="session")
def golden_images(golden_dir) -> list[Path]:
    return sorted((golden_dir / "images").glob("*.png"))


@pytest.fixture(scope="session")
def sample_photos() -> list[np.ndarray]:
    """Real colour photos from the scikit-image / scikit-learn wheels (uint8 HWC)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    photos += list(load_sample_images().images)
    return photos


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: a second intra-op thread costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)

"""Tiny random TiTok / MaskGIT models for the app tests, in memory and saved as checkpoint folders."""
import copy
import importlib.util
import socket

import pytest

import onetok

from ..conftest import IN_CI


def need(condition: bool, what: str) -> None:
    """Skip locally, fail under CI=true, when something the app tests use is missing (also at module level)."""
    if condition:
        return
    message = f"{what} is not available (pip install -e '.[dev]'; the browser: .ci/install_browser.sh)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


def need_module(name: str) -> None:
    need(importlib.util.find_spec(name) is not None, f"the Python package {name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_tree(num_tokens: int) -> dict:
    tree = copy.deepcopy(onetok.preset("titok_tiny"))
    tree["model"]["vq_model"]["num_latent_tokens"] = num_tokens
    tree["model"]["generator"]["image_seq_len"] = num_tokens
    return tree


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return onetok.TiTok.from_config(tiny_tree(32)).eval()


@pytest.fixture(scope="session")
def tiny_generator():
    return onetok.MaskGIT.from_config(tiny_tree(32)).eval()


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_tokenizer, tiny_generator):
    """The tiny pair as the app holds it: a Pipeline at the default ("auto") precision."""
    return onetok.Pipeline(tiny_tokenizer, tiny_generator)


@pytest.fixture(scope="session")
def checkpoint_folders(tmp_path_factory) -> dict[str, str]:
    """Tokenizers of 16 and 32 tokens and a generator for the 32-token one, saved with save_pretrained."""
    root = tmp_path_factory.mktemp("app_models")
    folders = {}
    for tokens in (16, 32):
        folder = root / f"titok_tiny_{tokens}"
        onetok.TiTok.from_config(tiny_tree(tokens)).save_pretrained(folder)
        folders[f"tokenizer_{tokens}"] = str(folder)
    tree = tiny_tree(32)
    tree["model"]["generator"]["class_names"] = [f"thing {i}" for i in range(10)]
    onetok.MaskGIT.from_config(tree).save_pretrained(root / "maskgit_tiny")
    folders["generator"] = str(root / "maskgit_tiny")
    return folders

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from onetok.data.tokens import (
    TokenDataset, TokenDatasetError, TokenizerMismatchError, finished_shards, save_token_shard, token_dtype,
    tokenizer_fingerprint, write_token_manifest,
)

CONFIG = {"model": {"vq_model": {"codebook_size": 4096, "num_latent_tokens": 32, "token_size": 12}}}
WEIGHTS = {"quantize.embedding.weight": torch.arange(4096 * 12.0).view(4096, 12), "decoder.bias": torch.ones(3)}


def _write(root, codebook_size=4096, num_tokens=32, counts=(5, 3)):
    fingerprint = tokenizer_fingerprint(CONFIG, WEIGHTS)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(codebook_size, (sum(counts), num_tokens), generator=gen)
    labels = torch.arange(sum(counts)) % 3
    start = 0
    for index, n in enumerate(counts):
        save_token_shard(root, index, ids[start : start + n], labels[start : start + n], codebook_size)
        start += n
    write_token_manifest(root, fingerprint, num_tokens, codebook_size, ["x", "y", "z"])
    return ids, labels, fingerprint


def test_fingerprint_is_canonical():
    shuffled = {"model": {"vq_model": {"token_size": 12, "num_latent_tokens": 32, "codebook_size": 4096}}}
    assert tokenizer_fingerprint(CONFIG, WEIGHTS) == tokenizer_fingerprint(shuffled, WEIGHTS)
    changed = {"model": {"vq_model": {**CONFIG["model"]["vq_model"], "codebook_size": 8192}}}
    assert tokenizer_fingerprint(CONFIG, WEIGHTS) != tokenizer_fingerprint(changed, WEIGHTS)
    assert len(tokenizer_fingerprint(CONFIG, WEIGHTS)) == 64
    retrained = {**WEIGHTS, "quantize.embedding.weight": WEIGHTS["quantize.embedding.weight"] + 1}
    assert tokenizer_fingerprint(CONFIG, WEIGHTS) != tokenizer_fingerprint(CONFIG, retrained)


def test_round_trip(tmp_path):
    ids, labels, fingerprint = _write(tmp_path)
    dataset = TokenDataset(tmp_path, expected_hash=fingerprint)
    assert len(dataset) == 8 and dataset.num_tokens == 32 and dataset.codebook_size == 4096
    assert dataset.class_names == ["x", "y", "z"] and dataset.num_classes == 3
    assert np.load(tmp_path / "tokens-00000.npy").dtype == np.uint16
    for i in range(8):
        got_ids, got_label = dataset[i]
        assert got_ids.dtype == torch.long and torch.equal(got_ids, ids[i]) and got_label == labels[i]
    assert torch.equal(dataset[-1][0], ids[-1])
    batch_ids, batch_labels = next(iter(DataLoader(dataset, batch_size=8, num_workers=1)))
    assert torch.equal(batch_ids, ids) and torch.equal(batch_labels, labels)


def test_large_codebook_uses_int32(tmp_path):
    ids, _, _ = _write(tmp_path, codebook_size=100_000, counts=(4,))
    assert np.load(tmp_path / "tokens-00000.npy").dtype == np.int32
    assert token_dtype(65536) == np.uint16
    assert torch.equal(TokenDataset(tmp_path)[3][0], ids[3])


def test_foreign_tokenizer_is_refused(tmp_path):
    _write(tmp_path)
    other = tokenizer_fingerprint({**CONFIG, "seed": 1}, WEIGHTS)
    with pytest.raises(TokenizerMismatchError, match="pretokenize the data again"):
        TokenDataset(tmp_path, expected_hash=other)


def test_resume_bookkeeping_and_errors(tmp_path):
    assert finished_shards(tmp_path / "nothing") == []
    save_token_shard(tmp_path, 3, np.zeros((2, 4), np.int64), [0, 1], 16)
    save_token_shard(tmp_path, 0, np.ones((1, 4), np.int64), [0], 16)
    assert finished_shards(tmp_path) == [0, 3]
    with pytest.raises(TokenDatasetError, match="no manifest.json"):
        TokenDataset(tmp_path)
    with pytest.raises(TokenDatasetError, match=r"in \[0, 16\)"):
        save_token_shard(tmp_path, 1, np.full((1, 4), 16), [0], 16)
    with pytest.raises(TokenDatasetError, match="expected 8"):
        write_token_manifest(tmp_path, "h", 8, 16, ["a"])
    manifest = write_token_manifest(tmp_path, "h", 4, 16, ["a", "b"])
    assert manifest["count"] == 3
    (tmp_path / "tokens-00003.npy").unlink()
    with pytest.raises(TokenDatasetError, match="missing"):
        TokenDataset(tmp_path)[2]

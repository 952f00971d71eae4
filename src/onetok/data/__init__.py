"""Image sources, preprocessing and token datasets."""
from .shards import ShardDataset, make_shards
from .sources import (
    ArrayDataset, DatasetError, ImageFileDataset, build_dataset, predecode, skip_log,
)
from .tokens import TokenDataset, TokenizerMismatchError, save_token_shard, tokenizer_fingerprint, write_token_manifest
from .transforms import EvalTransform, TrainTransform, build_transform, sample_generator

__all__ = [
    "ArrayDataset", "DatasetError", "EvalTransform", "ImageFileDataset", "ShardDataset",
    "TokenDataset", "TokenizerMismatchError", "TrainTransform", "build_dataset", "build_transform", "make_shards",
    "predecode", "sample_generator", "save_token_shard", "skip_log", "tokenizer_fingerprint", "write_token_manifest",
]

"""ImageBert: MaskGIT on a post-LN BERT encoder, in the Hugging Face BertModel key layout."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import GeneratorConfig
from .maskgit import MaskGIT
from .vit import init_reference_weights

BERT_LN_EPS = 1e-12


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, width: int, positions: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, width)
        self.position_embeddings = nn.Embedding(positions, width)
        # row 0 is added everywhere; kept for checkpoint parity
        self.token_type_embeddings = nn.Embedding(2, width)
        self.LayerNorm = nn.LayerNorm(width, eps=BERT_LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self.position_embeddings.weight[: tokens.shape[1]]
        x = self.word_embeddings(tokens) + self.token_type_embeddings.weight[0] + positions
        return self.dropout(self.LayerNorm(x))


class _DenseNorm(nn.Module):
    """dense -> dropout -> add residual -> LayerNorm (BERT's post-LN step)."""

    def __init__(self, d_in: int, width: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(d_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=BERT_LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, attn_drop: float):
        super().__init__()
        self.heads, self.attn_drop = heads, attn_drop
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(proj(x), "b n (h d) -> b h n d", h=self.heads) for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return rearrange(out, "b h n d -> b n (h d)")


class BertAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, attn_drop: float):
        super().__init__()
        self.self = BertSelfAttention(width, heads, attn_drop)
        self.output = _DenseNorm(width, width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        h = cfg.hidden_size
        self.attention = BertAttention(h, cfg.num_attention_heads, cfg.dropout, cfg.attn_drop)
        self.intermediate = BertIntermediate(h, cfg.intermediate_size)
        self.output = _DenseNorm(cfg.intermediate_size, h, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class BertBackbone(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg.vocab_size, cfg.hidden_size, cfg.image_seq_len + 1, cfg.dropout)
        self.encoder = BertEncoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.codebook_size)


class ImageBert(MaskGIT):
    backbone_name = "ViT"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        self.model = BertBackbone(config)
        self.apply(partial(init_reference_weights, truncated=False))

    def logits(self, sequence: torch.Tensor) -> torch.Tensor:
        hidden = self.model.encoder(self.model.embeddings(sequence))
        return self.model.lm_head(hidden[:, 1:])

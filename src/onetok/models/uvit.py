"""UViTBert: MaskGIT on a U-ViT (pre-LN blocks with long skip connections)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import GeneratorConfig
from .maskgit import MaskGIT
from .vit import init_reference_weights


class UViTAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))


class UViTMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class UViTBlock(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, skip: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = UViTAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = UViTMlp(width, hidden)
        self.skip_linear = nn.Linear(2 * width, width) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViTBert(MaskGIT):
    backbone_name = "UViT"

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        h, heads, mlp = config.hidden_size, config.num_attention_heads, config.intermediate_size
        half = config.num_hidden_layers // 2
        self.embeddings = nn.Embedding(config.vocab_size, h)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.image_seq_len + 1, h))
        self.in_blocks = nn.ModuleList(UViTBlock(h, heads, mlp) for _ in range(half))
        self.mid_block = UViTBlock(h, heads, mlp)
        self.out_blocks = nn.ModuleList(UViTBlock(h, heads, mlp, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(h)
        self.lm_head = nn.Linear(h, config.codebook_size)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_reference_weights)

    def logits(self, sequence: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(sequence) + self.pos_embed[:, : sequence.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return self.lm_head(self.norm(x))[:, 1:]

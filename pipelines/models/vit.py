"""A small vision transformer for `pipe`'s `train` stage (`model = "script"`).

Plain PyTorch: 7x7 patches embedded as tokens with a learned position embedding, two
pre-norm transformer blocks (multi-head self-attention and an MLP, each residual), then a
final LayerNorm and the mean over tokens, and a linear classifier. The layers pipe sees,
in order: `embed` (tokens, [N, T, D]), `blocks.0`, `blocks.1` ([N, T, D]), `pool` ([N, D])
and `logits`. Every parameter lives under one of those names.
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, size: int, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (size // patch) ** 2, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


class Pool(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x).mean(dim=1)


class ViT(nn.Module):
    def __init__(self, channels: int = 1, size: int = 28, patch: int = 7, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp: int = 128, classes: int = 10):
        super().__init__()
        self.embed = PatchEmbed(channels, size, patch, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp) for _ in range(depth)])
        self.pool = Pool(dim)
        self.logits = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)[-1][1]

    @torch.jit.export
    def layers(self, x: Tensor) -> List[Tuple[str, Tensor]]:
        h = self.embed(x)
        out: List[Tuple[str, Tensor]] = [("embed", h)]
        i = 0
        for block in self.blocks:
            h = block(h)
            out.append(("blocks." + str(i), h))
            i += 1
        h = self.pool(h)
        out.append(("pool", h))
        out.append(("logits", self.logits(h)))
        return out


# The class the shipped pipeline exports (`models/${arch}.py:Model`).
Model = ViT

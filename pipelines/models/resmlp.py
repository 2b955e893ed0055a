"""A residual MLP for `pipe`'s `train` stage (`model = "script"`).

Plain PyTorch: the flattened image embedded by a linear layer, then residual blocks
x + W2 relu(W1 LayerNorm(x)), then a linear classifier. The layers
pipe sees, in order: `embed`, `blocks.0` .. `blocks.{depth-1}` (all [N, width]), `logits`.
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn


class Residual(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.fc1(self.norm(x)).relu())


class ResMLP(nn.Module):
    def __init__(self, inputs: int = 784, width: int = 256, hidden: int = 512, depth: int = 2,
                 classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList([Residual(width, hidden) for _ in range(depth)])
        self.logits = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)[-1][1]

    @torch.jit.export
    def layers(self, x: Tensor) -> List[Tuple[str, Tensor]]:
        h = self.embed(x.flatten(1)).relu()
        out: List[Tuple[str, Tensor]] = [("embed", h)]
        i = 0
        for block in self.blocks:
            h = block(h)
            out.append(("blocks." + str(i), h))
            i += 1
        out.append(("logits", self.logits(h)))
        return out


# The class the shipped pipeline exports (`models/${arch}.py:Model`).
Model = ResMLP

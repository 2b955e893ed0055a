"""The built-in MLP 512-512 as an ordinary PyTorch module, for torch/benches/train.rs.

Scripted by pipelines/models/export.py and trained by pipe's `train` with
`model = "script"`; trained eagerly by train_torch.py (`--module`), as its PyTorch peer.
Same layers as `model = "mlp"`, `hidden = [512, 512]`: fc1, fc2 (ReLU after each), logits.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(self, inputs: int = 784, hidden: int = 512, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.logits = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc2(self.fc1(x.flatten(1)).relu()).relu()
        return self.logits(h)

    @torch.jit.export
    def layers(self, x: Tensor) -> List[Tuple[str, Tensor]]:
        h1 = self.fc1(x.flatten(1)).relu()
        h2 = self.fc2(h1).relu()
        return [("fc1", h1), ("fc2", h2), ("logits", self.logits(h2))]

"""The PyTorch peer of pipe's train stage, for torch/benches/train.rs.

Trains the same MLP or CNN (or, with `--module FILE.py:CLASS`, the user's module that pipe
trains as TorchScript, here eagerly as a plain PyTorch script would) on the same Parquet inputs (a pipe dataset artifact and a
corrupt artifact) with the same batch size, optimizer, data standardization and per-epoch
evaluation, on `--device` (the whole data set there), and prints {"seconds": [per-epoch seconds], "examples": n} as JSON.
"""
import argparse
import importlib.util
import json
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--labels", required=True)
p.add_argument("--model", choices=["mlp", "cnn", "module"], required=True)
p.add_argument("--module", help="FILE.py:CLASS, with --model module")
p.add_argument("--epochs", type=int, required=True)
p.add_argument("--batch", type=int, required=True)
p.add_argument("--threads", type=int, required=True)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--device", default="cpu", help="cpu or cuda: where the model and the whole data set live")
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)


def images(path):
    t = pq.read_table(path)
    x = np.stack(t.column("image").to_numpy(zero_copy_only=False)).astype(np.uint8)
    return torch.from_numpy(x).view(-1, 1, 28, 28), torch.tensor(t.column("label").to_numpy())


xtr, ytrue = images(f"{args.data}/train.parquet")
xte, yte = images(f"{args.data}/test.parquet")
ytr = torch.tensor(pq.read_table(f"{args.labels}/labels.parquet").column("train_label").to_numpy())
xf = xtr.float() / 255
mean, std = xf.mean(dim=(0, 2, 3), keepdim=True), xf.std(dim=(0, 2, 3), keepdim=True)
xtr = ((xtr.float() / 255 - mean) / std).to(args.device)
xte = ((xte.float() / 255 - mean) / std).to(args.device)
ytr, yte = ytr.to(args.device), yte.to(args.device)

if args.model == "module":
    file, _, name = args.module.partition(":")
    spec = importlib.util.spec_from_file_location("user_model", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = getattr(mod, name)()
elif args.model == "mlp":
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
else:
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )
net = net.to(args.device)
opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()


def evaluate(x, y):
    net.eval()
    loss, hits = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(x), 1000):
            logits = net(x[s:s + 1000])
            loss += nn.functional.cross_entropy(logits.double(), y[s:s + 1000], reduction="sum").item()
            hits += (logits.argmax(1) == y[s:s + 1000]).sum().item()
    net.train()
    return loss / len(x), hits / len(x)


seconds = []
n = len(xtr)
for epoch in range(args.epochs):
    t0 = time.perf_counter()
    order = torch.randperm(n).to(args.device)
    for s in range(0, n, args.batch):
        idx = order[s:s + args.batch]
        loss = loss_fn(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    evaluate(xtr, ytr)
    evaluate(xte, yte)
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"seconds": seconds, "examples": n}))

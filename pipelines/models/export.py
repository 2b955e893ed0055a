"""Scripts a PyTorch model for `pipe`'s `train` stage (`model = "script"`) and checks it.

Usage, in an `exec` stage (see README, "Your own model"):

    cmd = ["python3", "models/export.py", "models/mlp.py:MLP", "--input", "1", "28", "28", "--classes", "10"]

(writing $PIPE_OUT/model.pt),

or from Python: `export(module, "model.pt", input_shape=(1, 28, 28), classes=10)`.

The model is an ordinary `nn.Module` with, besides `forward(x) -> logits [N, C]`,

    @torch.jit.export
    def layers(self, x) -> List[Tuple[str, Tensor]]:
        # every layer's output, named, in order, the last being the logits

Every parameter and buffer must belong to a layer by name prefix
(`blocks.3.attn.qkv.weight` belongs to layer `blocks.3`). This script builds the module
(seeded), scripts it with TorchScript, adds
a method `buffers_by_name()` (libtorch's C++ side cannot list buffers), checks the contract
on a batch of the given shape and saves it. TorchScript is the format because libtorch can
train only that from C++; only this adapter knows it.
"""

import argparse
import importlib.util
import json
import os
import sys
import warnings
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn


class ContractError(Exception):
    """The module does not keep the contract; the message says what is expected."""


def _access(name: str) -> str:
    """TorchScript for reaching a buffer by its state-dict name (`blocks.0.bn.running_mean`)."""
    expr = "self"
    for part in name.split("."):
        expr += f"[{part}]" if part.isdigit() else f".{part}"
    return expr


def _layer_of(layers: List[str], name: str):
    owners = [l for l in layers if name.startswith(l + ".")]
    return max(owners, key=len) if owners else None


def check(scripted, input_shape, classes: int) -> List[str]:
    """Checks the contract on a batch of two inputs; returns the layer names."""
    x = torch.randn(2, *input_shape)
    scripted.eval()
    with torch.no_grad():
        logits = scripted(x)
        if not isinstance(logits, Tensor) or tuple(logits.shape) != (2, classes):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ContractError(
                f"forward(x) must return the logits [N, C] = [2, {classes}] for x of shape "
                f"{tuple(x.shape)}, it returned {got}"
            )
        if not hasattr(scripted, "layers"):
            raise ContractError(
                "the module has no method `layers`: add `@torch.jit.export def layers(self, x) "
                "-> List[Tuple[str, Tensor]]` returning every layer's output, the last the logits"
            )
        outs = scripted.layers(x)
    names = [n for n, _ in outs]
    if not names:
        raise ContractError("layers(x) returned no layers")
    if len(set(names)) != len(names) or "input" in names:
        raise ContractError(f"layer names must be unique and not 'input': {names}")
    if not torch.allclose(outs[-1][1], logits, rtol=1e-5, atol=1e-6):
        raise ContractError(f"the last output of layers(x), {names[-1]!r}, must be the logits")
    for kind, named in (("parameter", scripted.named_parameters()), ("buffer", scripted.named_buffers())):
        for name, _ in named:
            if _layer_of(names, name) is None:
                raise ContractError(
                    f"{kind} `{name}` belongs to no layer: every parameter and buffer must be "
                    f"named after a layer of layers(x) ({', '.join(names)}), as its prefix"
                )
    return names


def export(module: nn.Module, path: str, input_shape=(1, 28, 28), classes: int = 10):
    """Scripts `module`, adds `buffers_by_name`, checks the contract, saves to `path`."""
    module = module.eval()
    buffers = [n for n, _ in module.named_buffers()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module)
    items = ", ".join(f'"{n}": {_access(n)}' for n in buffers)
    scripted.define(
        "def buffers_by_name(self) -> Dict[str, Tensor]:\n"
        f"    out: Dict[str, Tensor] = {{{items}}}\n"
        "    return out\n"
    )
    names = check(scripted, input_shape, classes)
    scripted.save(path)
    return names


def _load_class(spec: str):
    file, _, name = spec.partition(":")
    mod_spec = importlib.util.spec_from_file_location("user_model", file)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return getattr(mod, name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="FILE.py:CLASS")
    ap.add_argument(
        "out", nargs="?", help="where to write the module (default: $PIPE_OUT/model.pt)"
    )
    ap.add_argument("--input", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--kwargs", default="{}", help="JSON object of constructor arguments")
    ap.add_argument("--seed", type=int, default=0, help="seeds the module's own initialization")
    a = ap.parse_args(argv)
    if a.out is None:
        if "PIPE_OUT" not in os.environ:
            ap.error("give OUT, or run as a pipe exec stage (which sets $PIPE_OUT)")
        a.out = os.path.join(os.environ["PIPE_OUT"], "model.pt")
    torch.manual_seed(a.seed)
    module = _load_class(a.model)(**json.loads(a.kwargs))
    try:
        names = export(module, a.out, tuple(a.input), a.classes)
    except ContractError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: layers {', '.join(names)}")
    return 0


if __name__ == "__main__":
    # TorchScript writes a module's constants in the order of a Python set, which string
    # hashing randomizes per process: with a fixed hash seed the same module gives the same
    # file, so an unchanged model exported again keys the same training.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    sys.exit(main())

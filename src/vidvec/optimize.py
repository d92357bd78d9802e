"""What a model's module becomes before a run computes with it: the same function, cheaper to evaluate.

- :func:`fold_batch_norms`: each inference-mode BatchNorm that only ever sees one convolution's output is folded
  into that convolution's weights and bias (the BatchNorm becomes an Identity): one pass over every activation
  less, on any device.
- :func:`fold_quick_gelus`: each Linear -> QuickGELU (x * sigmoid(1.702 x), CLIP's activation) -> Linear run of a
  Sequential computes Linear' -> SiLU -> Linear' instead, the 1.702 moved into the two Linears' weights: one
  pass over the MLP's activations where QuickGELU takes three.
- :func:`to_channels_last` / :func:`as_channels_last`: the layout oneDNN's CPU convolutions are fastest in, for
  the families whose card says so.

They change the vectors by rounding only (tests/test_fast_paths.py and the PySlowFast parity fixtures bound it);
the figures behind them are in docs/benchmarks.md.
"""

from __future__ import annotations

import inspect

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batch_norms(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm (in eval mode, with running statistics) whose input is the output of one
    convolution that nothing else reads and that is called once; returns how many were folded. The pairs are
    found in torch.fx graphs, traced with the forward's optional arguments at their defaults: of ``module`` if
    it traces, else of its children, recursively (a forward with data-dependent control flow does not trace;
    its submodules usually do)."""
    try:
        graph = _Tracer().trace(module, concrete_args=_defaults(module))
    except Exception:  # noqa: BLE001 - fx refuses many forwards; its children are tried instead
        return sum(fold_batch_norms(child) for child in module.children())
    modules = dict(module.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in graph.nodes:
        norm = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if isinstance(norm, _NORMS) and node.args else None
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"):
            continue
        conv = modules.get(source.target)
        if (isinstance(conv, _CONVS) and len(source.users) == 1 and calls[source.target] == 1
                and calls[node.target] == 1 and not norm.training and norm.running_mean is not None
                and _fold(conv, norm)):
            parent, _, name = node.target.rpartition(".")
            setattr(module.get_submodule(parent), name, nn.Identity())
            folded += 1
    return folded


def _defaults(module: nn.Module) -> dict[str, object]:
    """The forward's optional arguments at their defaults (e.g. ``drop_rate=None``, which a forward tests with
    ``if``): the graph is only read for which convolution feeds which BatchNorm, never run."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


class _Tracer(torch.fx.Tracer):
    """Keeps every convolution and BatchNorm, subclasses included (e.g. a convolution that pads its input
    first), as one call in the graph."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, _CONVS + _NORMS) or super().is_leaf_module(m, qualified_name)


def _fold(conv: nn.Module, norm: nn.Module) -> bool:
    """Make conv(x) compute norm(conv(x)): weights scaled per output channel, the shift in the bias (computed in
    float64, stored in the weights' dtype). A convolution subclass may use its weights otherwise (e.g. it
    standardises them), so the result is checked on a random input and undone, returning False, if it differs."""
    dtype, kept = conv.weight.dtype, (conv.weight, conv.bias)

    def wide(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().double()

    size = [(k - 1) * d + 4 for k, d in zip(conv.kernel_size, conv.dilation)]
    probe = torch.randn(2, conv.in_channels, *size, generator=torch.Generator().manual_seed(0)).to(
        conv.weight.device, dtype)
    with torch.no_grad():
        expected = norm(conv(probe))
        weight, bias = fuse_conv_bn_weights(wide(conv.weight), wide(conv.bias), wide(norm.running_mean),
                                            wide(norm.running_var), norm.eps, wide(norm.weight), wide(norm.bias))
        conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        error = (conv(probe) - expected).abs().max() / expected.abs().max().clamp_min(1e-12)
    if error <= (1e-4 if dtype in (torch.float32, torch.float64) else 2e-2):
        return True
    conv.weight, conv.bias = kept
    return False


QUICK_GELU_SCALE = 1.702


def fold_quick_gelus(module: nn.Module) -> int:
    """Rewrite, in place, every Linear -> QuickGELU -> Linear run of consecutive children of a Sequential in
    ``module`` so the activation is a SiLU: silu(1.702 h) / 1.702 = h * sigmoid(1.702 h), with the 1.702 folded
    into the first Linear and its inverse into the second. An activation is taken for QuickGELU when its class
    is named so and it computes x * sigmoid(1.702 x) on a probe; each rewrite is checked and undone if it differs.
    Returns how many were rewritten."""
    done = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, act, second in zip(names, names[1:], names[2:]):
            a, g, b = seq._modules[first], seq._modules[act], seq._modules[second]
            if isinstance(a, nn.Linear) and isinstance(b, nn.Linear) and _is_quick_gelu(g, a.weight):
                done += _fold_quick_gelu(seq, first, act, second)
    return done


def _is_quick_gelu(act: nn.Module | None, like: torch.Tensor) -> bool:
    if act is None or type(act).__name__ != "QuickGELU":
        return False
    probe = torch.linspace(-6, 6, 97, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        return bool(torch.allclose(act(probe), probe * torch.sigmoid(QUICK_GELU_SCALE * probe), atol=1e-6))


def _fold_quick_gelu(seq: nn.Sequential, first: str, act: str, second: str) -> bool:
    a, g, b = seq._modules[first], seq._modules[act], seq._modules[second]
    kept = (a.weight, a.bias, b.weight)
    probe = torch.randn(4, a.in_features, generator=torch.Generator().manual_seed(0)).to(a.weight.device,
                                                                                         a.weight.dtype)
    with torch.no_grad():
        expected = b(g(a(probe)))
        a.weight = nn.Parameter(a.weight * QUICK_GELU_SCALE, requires_grad=False)
        if a.bias is not None:
            a.bias = nn.Parameter(a.bias * QUICK_GELU_SCALE, requires_grad=False)
        b.weight = nn.Parameter(b.weight / QUICK_GELU_SCALE, requires_grad=False)
        silu = nn.SiLU()
        error = (b(silu(a(probe))) - expected).abs().max() / expected.abs().max().clamp_min(1e-12)
    if error <= (1e-4 if a.weight.dtype in (torch.float32, torch.float64) else 2e-2):
        seq._modules[act] = silu
        return True
    a.weight, b.weight = nn.Parameter(kept[0], requires_grad=False), nn.Parameter(kept[2], requires_grad=False)
    if kept[1] is not None:
        a.bias = nn.Parameter(kept[1], requires_grad=False)
    return False


def to_channels_last(module: nn.Module) -> nn.Module:
    """Lay ``module``'s 4-D and 5-D parameters and buffers (2-D and 3-D convolution weights) out channels-last,
    in place: oneDNN's convolutions then run channels-last."""
    for tensor in (*module.parameters(), *module.buffers()):
        tensor.data = as_channels_last(tensor.data)
    return module


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D or 5-D tensor laid out channels-last (other tensors as they are)."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x

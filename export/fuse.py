"""Fold every BatchNorm into the convolution before it (inference-time equivalent).

For eval-mode BN with running mean m, variance v, weight g, bias b and eps e after a conv with
weight W and bias c:  y = g * (W x + c - m) / sqrt(v + e) + b, i.e. a conv with
W' = W * g / sqrt(v + e) (per output channel) and c' = (c - m) * g / sqrt(v + e) + b.

Which conv a BN follows is read from the model's real dataflow (a ``torch.fx`` trace of
``forward``), not from the order modules happen to be registered in: a BN folds only when its
input is the output of a ``Conv2d`` that nothing else reads, and each module is called once.
Anything else (a BN after an activation, after a PixelShuffle, a conv whose output also feeds a
skip connection, a shared conv) is an ``UnfoldableBatchNormError`` naming the BN, never a
silent skip and never a wrong fold. conv -> BN -> PixelShuffle folds like any conv -> BN
(PixelShuffle only moves values, so folding before it is exact).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_BN = nn.modules.batchnorm._BatchNorm


class UnfoldableBatchNormError(ValueError):
    """A BatchNorm that cannot be folded into a preceding convolution (the message names it)."""


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    The arithmetic is done in float64 and rounded once to the conv's dtype, so the folded
    weights are as close to the exact product as the dtype allows.

    Args:
        conv: the convolution (any stride/padding/groups/dilation; bias optional).
        bn: the BatchNorm applied to ``conv``'s output; must track running statistics.
    """
    if type(conv) is not nn.Conv2d:
        raise UnfoldableBatchNormError(f"fold_conv_bn: {type(conv).__name__} is not an nn.Conv2d")
    if conv.out_channels != bn.num_features:
        raise UnfoldableBatchNormError(f"fold_conv_bn: conv has {conv.out_channels} outputs, BN {bn.num_features}")
    if bn.running_mean is None or bn.running_var is None:
        raise UnfoldableBatchNormError("fold_conv_bn: BatchNorm without running statistics "
                                       "(track_running_stats=False) cannot be folded")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        w = conv.weight.double()
        c = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64,
                                                                         device=w.device)
        g = bn.weight.double() if bn.weight is not None else torch.ones_like(c)
        b = bn.bias.double() if bn.bias is not None else torch.zeros_like(c)
        factor = g * torch.rsqrt(bn.running_var.double() + bn.eps)
        fused.weight.copy_((w * factor.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        fused.bias.copy_(((c - bn.running_mean.double()) * factor + b).to(conv.weight.dtype))
    return fused


def _trace(model: nn.Module):
    import torch.fx

    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow etc.
        raise UnfoldableBatchNormError(
            f"fuse_bn: cannot trace {type(model).__name__}.forward with torch.fx ({exc}); without the "
            "dataflow graph there is no proof that each BatchNorm directly follows a conv, so nothing "
            "is folded. Make forward traceable or fold the BatchNorms by hand.") from exc


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The ``(conv_name, bn_name)`` pairs to fold, found from ``model``'s traced dataflow.

    Raises ``UnfoldableBatchNormError`` naming the first BatchNorm that does not directly and
    exclusively follow a ``Conv2d``.

    Args:
        model: the model (put in eval mode first: ``forward`` may branch on ``self.training``).
    """
    graph = _trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    called = set(calls)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BN):
            continue
        bn = node.target
        src = node.args[0] if node.args else None
        if not (hasattr(src, "op") and src.op == "call_module" and type(modules[src.target]) is nn.Conv2d):
            what = (f"{src.op} {src.target}" if hasattr(src, "op") else repr(src))
            raise UnfoldableBatchNormError(
                f"fuse_bn: BatchNorm {bn!r} does not directly follow an nn.Conv2d (its input is {what}); "
                "it cannot be folded. Fold it by hand or change the architecture.")
        conv = src.target
        if len(src.users) != 1:
            raise UnfoldableBatchNormError(
                f"fuse_bn: BatchNorm {bn!r} follows conv {conv!r}, but that conv's output is also used "
                f"elsewhere ({', '.join(str(u) for u in src.users)}); folding would change those uses.")
        if calls[bn] != 1 or calls[conv] != 1:
            raise UnfoldableBatchNormError(
                f"fuse_bn: BatchNorm {bn!r} or conv {conv!r} is called more than once in forward "
                "(shared module); folding would change the other calls.")
        pairs.append((conv, bn))
    # A BatchNorm that forward never calls would survive; report it rather than keep it.
    unused = [n for n, m in modules.items() if isinstance(m, _BN) and n not in called]
    if unused:
        raise UnfoldableBatchNormError(f"fuse_bn: BatchNorm {unused[0]!r} is not called by forward "
                                       "(or is called through a function fx cannot see); cannot fold it")
    return pairs


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def fuse_bn(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm folded into its preceding conv.

    The caller's model is untouched. The result keeps the model's class and ``forward``: each
    folded conv is replaced by the fused conv and each BatchNorm by ``nn.Identity``, so module
    names (and the ONNX node names derived from them) stay the same. Adjacency comes from a
    ``torch.fx`` trace of the real dataflow (see ``conv_bn_pairs``); an unfoldable BatchNorm
    raises ``UnfoldableBatchNormError`` naming it. Afterwards no BatchNorm remains.

    Args:
        model: any ``nn.Module`` whose ``forward`` torch.fx can trace (SRResNet, Discriminator).
    """
    fused = copy.deepcopy(model).eval()
    if not any(isinstance(m, _BN) for m in fused.modules()):
        return fused  # nothing to fold, and no trace needed (graphs torch.fx cannot trace export as they are)
    for conv_name, bn_name in conv_bn_pairs(fused):
        _set_submodule(fused, conv_name, fold_conv_bn(fused.get_submodule(conv_name), fused.get_submodule(bn_name)))
        _set_submodule(fused, bn_name, nn.Identity())
    left = [n for n, m in fused.named_modules() if isinstance(m, _BN)]
    if left:  # defensive: conv_bn_pairs raises first
        raise UnfoldableBatchNormError(f"fuse_bn: BatchNorm left unfused: {left}")
    return fused


def randomize_bn(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (in place).

    Fresh BNs have mean 0, variance 1, weight 1, bias 0, which folds to almost the identity and
    proves little; tests and parity checks use this to make folding do real work. Also gives
    PReLU slopes distinct values. Returns ``model``.

    Args:
        model: the model to modify.
        seed: random seed (deterministic per seed).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BN):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.05)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.4)
    return model

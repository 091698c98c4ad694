"""`fuse(model)`: the inference form of a (converted or original) model.

Folds every BatchNorm that directly follows a conv (any nn.Conv2d, a ParC, a ParCPair)
into that conv's weight and bias, and every plain BatchNorm that directly precedes a ParC
or a 1x1 nn.Conv2d (no padding) into it: the BN becomes Identity (or its activation, for
timm's BatchNormAct2d). A ParC's input BN folds exactly at every size, because its shift
goes into the position embedding (pe' = (pe + shift) / scale) and a circular convolution
has no border. Adjacency is found from one traced forward at `input_size`: a BN is folded
only when the tensor it reads is the conv's output (or the tensor it writes is the conv's
input) and no other module reads that tensor.

The fused model computes the same function (fp64 max diff <= 1e-10 in the tests) and is
inference-only: it must be in eval mode, its parameters stop requiring grad, and
`.train()` on it raises UsageError. ParC's position embedding is already folded into a
position bias by its eval-mode kernel cache at the fixed size, so nothing more is needed
for that.
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn

from parc_surgery.errors import UsageError
from parc_surgery.ops import ParC, ParCPair

__all__ = ["fuse", "is_fused"]

_FUSED = "_parc_surgery_fused"


def is_fused(model: nn.Module) -> bool:
    """True for a model `fuse` returned."""
    return bool(getattr(model, _FUSED, False))


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift per channel, in eval mode."""
    var, mean = bn.running_var, bn.running_mean
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _foldable_bn(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.BatchNorm2d)
        and module.track_running_stats
        and module.running_mean is not None
    )


def _bn_tail(bn: nn.Module) -> nn.Module:
    """What stays of a folded BN: Identity, or timm BatchNormAct2d's drop + act."""
    tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    tail = [m for m in tail if not isinstance(m, nn.Identity)]
    if not tail:
        return nn.Identity()
    return tail[0] if len(tail) == 1 else nn.Sequential(*tail)


def _has_tail(bn: nn.Module) -> bool:
    return not isinstance(_bn_tail(bn), nn.Identity)


def _set_bias(conv: nn.Module, bias: torch.Tensor) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.detach().clone())
    else:
        conv.bias.copy_(bias)


def _fold_after(conv: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """conv := bn(conv(.)) for a conv whose output channel o is scaled / shifted."""
    if isinstance(conv, ParCPair):
        c_h = conv.split[0]
        _fold_after(conv.parc_h, scale[:c_h], shift[:c_h])
        _fold_after(conv.parc_w, scale[c_h:], shift[c_h:])
        return
    w = conv.weight
    conv.weight.copy_(w * scale.view(-1, *([1] * (w.dim() - 1))).to(w.dtype))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    _set_bias(conv, bias.to(w.dtype))


def _per_weight(vec: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """An input-channel vector laid out as the weight's (O, C/groups) input axis."""
    w = conv.weight
    groups = conv.groups
    out, cpg = w.shape[0], w.shape[1]
    return vec.view(groups, 1, cpg).expand(groups, out // groups, cpg).reshape(out, cpg)


def _fold_before(conv: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> bool:
    """conv := conv(bn(.)); False (nothing changed) where that is not exact."""
    w = conv.weight
    scale, shift = scale.to(w.dtype), shift.to(w.dtype)
    if isinstance(conv, ParC):
        # conv(a x + c + pe) == conv_{w a}(x + (pe + c) / a): exact at every length.
        if bool((scale.abs() < 1e-12).any()):
            return False
        pe = conv.pe if conv.pe is not None else 0
        k_shape = (1, conv.in_chs, *w.shape[2:])
        new_pe = ((pe + shift.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1)).expand(k_shape)
        new_pe = new_pe.clone()
        if conv.pe is None:
            conv.pe = nn.Parameter(new_pe)
        else:
            conv.pe.copy_(new_pe)
        conv.weight.copy_(w * _per_weight(scale, conv)[:, :, None, None])
        return True
    # 1x1 conv without padding: conv(a x + c) == conv_{w a}(x) + W c.
    bias_add = (w.flatten(1) * _per_weight(shift, conv)).sum(1)
    conv.weight.copy_(w * _per_weight(scale, conv)[:, :, None, None])
    _set_bias(conv, bias_add if conv.bias is None else conv.bias + bias_add)
    return True


def _is_pointwise(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.kernel_size == (1, 1)
        and m.stride == (1, 1)
        and m.padding in ((0, 0), "valid")
        and m.padding_mode == "zeros"
    )


def _trace(model: nn.Module, example: torch.Tensor):
    """Per module: the input tensor and output tensor of its (only) call, and readers."""
    watched = (nn.Conv2d, ParC, ParCPair, nn.BatchNorm2d)
    calls: dict[nn.Module, list] = {}
    readers: dict[int, list] = {}
    keep: list = []  # holds every seen tensor so ids are not reused during the trace

    def hook(module, args, output):
        x = args[0] if args else None
        calls.setdefault(module, []).append((x, output))
        keep.extend([x, output])

    def pre(module, args):
        if args and isinstance(args[0], torch.Tensor):
            readers.setdefault(id(args[0]), []).append(module)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        if isinstance(m, watched):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls, readers, keep


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def fuse(
    model: nn.Module,
    input_size: tuple[int, int] | None = None,
    example: torch.Tensor | None = None,
) -> nn.Module:
    """Fold BatchNorms into adjacent convs / ParCs, in place; returns `model`, inference-only.

    `example` (or a zero batch of 1 x 3 x `input_size`, default the model's
    pretrained_cfg size or 224) drives one forward that finds which BN is adjacent to
    which conv. Raises UsageError for a model in train mode.
    """
    if model.training:
        raise UsageError(
            "fuse() needs a model in eval mode: the fused form folds BatchNorm running "
            "statistics and cannot train",
            hint="call model.eval() first, and fuse only for inference or export",
        )
    if is_fused(model):
        return model
    if example is None:
        if input_size is None:
            cfg = getattr(model, "pretrained_cfg", None) or {}
            input_size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else "cpu"
        example = torch.zeros(1, 3, *input_size, dtype=dtype, device=device)
    calls, readers, keep = _trace(model, example)
    names = {m: n for n, m in model.named_modules()}
    convs = [m for m in calls if isinstance(m, (nn.Conv2d, ParC, ParCPair))]
    by_output = {}
    by_input = {}
    for m in convs:
        if len(calls[m]) != 1:
            continue  # a module called twice (shared weights) keeps its BN
        x, y = calls[m][0]
        by_output[id(y)] = m
        by_input.setdefault(id(x), []).append(m)
    done: list[tuple[str, nn.Module]] = []
    with torch.no_grad():
        for bn in [m for m in calls if _foldable_bn(m) and len(calls[m]) == 1]:
            x, y = calls[bn][0]
            # BN after a conv: the conv's output feeds only this BN.
            conv = by_output.get(id(x))
            if conv is not None and readers.get(id(x), []) == [bn] and not _is_inside(conv, bn):
                _fold_after(conv, *_bn_affine(bn))
                done.append((names[bn], _bn_tail(bn)))
                continue
            # A plain BN before a ParC / 1x1 conv: only that conv reads the BN's output.
            if _has_tail(bn):
                continue
            after = readers.get(id(y), [])
            target = by_input.get(id(y), [])
            if len(after) == 1 and len(target) == 1 and after[0] is target[0]:
                conv = target[0]
                foldable = isinstance(conv, ParC) or _is_pointwise(conv)
                if foldable and _fold_before(conv, *_bn_affine(bn)):
                    done.append((names[bn], nn.Identity()))
    del keep
    for name, replacement in done:
        parent, attr = _parent(model, name)
        setattr(parent, attr, replacement)
    for m in model.modules():
        if isinstance(m, ParC):
            m._forget()
    model.requires_grad_(False)
    _mark_fused(model, len(done))
    return model


def _is_inside(conv: nn.Module, bn: nn.Module) -> bool:
    return any(m is bn for m in conv.modules())


def _fused_train(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise UsageError(
            "this model was fused for inference (BatchNorms folded into convs) and cannot train",
            hint="load or build the model again without fuse to train it",
        )
    return type(self).train(self, False)


def _mark_fused(model: nn.Module, folded: int) -> None:
    setattr(model, _FUSED, True)
    model.fused_batchnorms = folded
    # A bound method on the instance (deepcopy rebinds it to the copy); eval() still works.
    model.train = types.MethodType(_fused_train, model)

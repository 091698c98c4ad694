"""parc_surgery.fuse: the inference form computes the same function and cannot train."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

import parc_surgery as ps
from parc_surgery.errors import UsageError


def _randomise_bn(model: nn.Module) -> None:
    # Fresh BNs are identities; random statistics make a wrong fold visible.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(n, generator=g, dtype=m.running_var.dtype) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.randn(n, generator=g, dtype=m.weight.dtype))
                m.bias.data.copy_(torch.randn(n, generator=g, dtype=m.bias.dtype))


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


CASES = [
    ("resnet18", {"stages": [3, 4]}, 64),
    ("mobilenetv2_050", {"stages": [3, 4]}, 64),
    ("convnext_atto", {"stages": [3, 4]}, 64),
    ("mobilevit_xxs", {"stages": [3, 4]}, 64),
    ("mobilevit_xxs", {"rules": "parcnet-s"}, 64),
    ("vit_tiny_patch16_224", {}, 64),
]


@pytest.mark.parametrize(("name", "how", "size"), CASES, ids=[c[0] + str(c[1]) for c in CASES])
def test_fused_model_computes_the_same_function_in_fp64(name, how, size):
    kwargs = {"img_size": size} if name.startswith("vit") else {}
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    ps.parcify_(model, input_size=(size, size), **how)
    model = model.double().eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
    before = _count_bn(model)
    fused = ps.fuse(model, input_size=(size, size))
    with torch.no_grad():
        got = fused(x)
    assert (got - want).abs().max().item() <= 1e-10
    if before:  # ConvNets: BNs next to convs / ParCs are gone
        assert _count_bn(fused) < before
        assert fused.fused_batchnorms > 0


def test_fuse_refuses_a_model_in_train_mode():
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    with pytest.raises(UsageError, match="eval mode"):
        ps.fuse(model.train())


def test_fused_model_cannot_be_put_back_in_train_mode():
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    fused = ps.fuse(model, input_size=(32, 32))
    assert not any(p.requires_grad for p in fused.parameters())
    fused.eval()  # still allowed
    with pytest.raises(UsageError, match="cannot train"):
        fused.train()


def test_bn_whose_conv_output_is_also_read_elsewhere_is_not_folded():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.other = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + self.other(y)

    model = Branchy().double().eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    want = model(x).detach()
    fused = ps.fuse(model, example=x)
    assert isinstance(fused.bn, nn.BatchNorm2d)
    assert torch.allclose(fused(x), want, atol=1e-12)


def test_a_copy_of_a_fused_model_stays_inference_only():
    import copy

    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    clone = copy.deepcopy(ps.fuse(model, input_size=(32, 32)))
    assert ps.fusing.is_fused(clone)
    with pytest.raises(UsageError, match="cannot train"):
        clone.train()
    assert not clone.eval().training


def test_load_with_fuse_returns_the_fused_form_of_the_checkpoint(tmp_path):
    path = tmp_path / "r18.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ps.convert(
            "resnet18", model_args={"num_classes": 10}, input_size=(32, 32), output=str(path)
        )
    plain = ps.load(path).eval()
    _randomise_bn(plain)  # the same statistics in both: load, randomise, then fuse a copy
    import copy

    fused = ps.fuse(copy.deepcopy(plain), input_size=(32, 32))
    loaded = ps.load(path, fuse=True)
    assert ps.fusing.is_fused(loaded) and not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fused(x), plain(x), atol=1e-4, rtol=1e-4)
        assert torch.allclose(loaded(x), ps.load(path).eval()(x), atol=1e-4, rtol=1e-4)

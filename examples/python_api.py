"""Plan, apply, save, load and run a converted model from Python; convert a model object.

python examples/python_api.py [OUTPUT_DIR] [INPUT_SIZE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

import parc_surgery as ps
from parc_surgery.report import totals_line


def main(out_dir: str = ".", size: int = 224) -> None:
    # 1. Plan: build the timm model, trace it, match the shipped rules. Nothing changes yet.
    planned = ps.plan_conversion("mobilenetv2_100", stages=[3, 4], input_size=(size, size))
    for swap in planned.plan.swaps:
        print(f"{swap.path:<12} {swap.old_module:<20} -> {swap.new_module}")
    print(totals_line(planned.plan))

    # 2. Apply the plan in place and verify shapes against the original graph.
    model = ps.apply_plan(planned.model, planned.plan)
    figures = ps.verify(model, planned.plan, planned.graph)
    print("verified blocks:", figures.blocks_checked)

    # 3. Save (safetensors + recipe) and load it back: load() rebuilds from the recipe.
    path = Path(out_dir) / "mobilenetv2-parc.safetensors"
    ps.save(model, planned.plan, path, force=True)
    loaded = ps.load(path).eval()

    # 4. Inference, at the conversion resolution and at another one.
    with torch.inference_mode():
        for h, w in ((size, size), (size + 32, size)):
            logits = loaded(torch.randn(1, 3, h, w))
            print(f"{h}x{w}: logits {tuple(logits.shape)}, top-1 class {logits.argmax().item()}")

    # 5. Any model object, here torchvision's: parcify_ converts it in place (rules chosen
    #    by its block classes) and returns the Plan; load(model=...) rebuilds it.
    tv_model = torchvision.models.mobilenet_v2()
    plan = ps.parcify_(tv_model, input_size=(size, size))
    print("torchvision mobilenet_v2:", ", ".join(s.path for s in plan.swaps))
    tv_path = Path(out_dir) / "tv-mobilenetv2-parc.safetensors"
    ps.save(tv_model, plan, tv_path, force=True)
    reloaded = ps.load(tv_path, model=torchvision.models.mobilenet_v2())

    # 6. A backbone: the feature maps of the last two stages, at a non-square size.
    backbone = ps.load(tv_path, model=torchvision.models.mobilenet_v2(), features_only=True)
    with torch.inference_mode():
        maps = backbone.eval()(torch.randn(1, 3, size, size + 64))
    print("features:", [tuple(m.shape) for m in maps], "strides", backbone.feature_info.reduction())
    assert isinstance(reloaded, torchvision.models.MobileNetV2)


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["."]), *(int(a) for a in sys.argv[2:3]))

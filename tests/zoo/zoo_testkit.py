"""Shared checks of the zoo tests: gradients into every ParC parameter, the README's model
table and its rows against a dry run."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from parc_surgery.ops import ParC
from parc_surgery.plan import Plan
from parc_surgery.report import human_count


def parc_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for m in model.modules() if isinstance(m, ParC) for p in m.parameters()]


def one_training_step(model: torch.nn.Module, size: tuple[int, int]) -> None:
    """One SGD step on a cross-entropy loss, as training starts.

    Several families zero-initialise the last layer of each residual branch, so at init
    every gradient inside the branch (the ParC pair's included) is exactly zero, in the
    original model as in the converted one: timm's ResNet-style zero_init_last (the last
    BatchNorm's weight: res2net50_26w_4s, cspresnet50), NFNet's last conv (its gain is
    initialised to 0), and torchvision's VisionTransformer its classifier (heads.head:
    the logits are 0 whatever the input). These are init artefacts, no dead parameters:
    the zeroed layer's own gradient is not zero, so the first step moves it, and from then
    on every ParC parameter gets a gradient. Taking the step for every family keeps the
    check the same for each.
    """
    model.train()
    step = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(torch.randn(2, 3, *size))
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2])).backward()
    step.step()
    model.zero_grad(set_to_none=True)


def check_gradients(model: torch.nn.Module, x: torch.Tensor) -> None:
    """A train-mode backward reaches every ParC parameter with a finite, nonzero grad."""
    parc = parc_params(model)
    model.train()
    model(x).square().mean().backward()
    dead = [i for i, p in enumerate(parc) if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, (tuple(x.shape[2:]), dead)
    assert all(torch.isfinite(p.grad).all() for p in parc), tuple(x.shape[2:])
    model.zero_grad(set_to_none=True)


def readme_table() -> dict[str, list[str]]:
    """{model name: its row's cells} of the README's model table."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    table = text.split("### Model table", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = cells
    return rows


def check_readme_row(name: str, plan: Plan) -> None:
    """The README's row of `name` states this dry run's swaps, params and MACs."""
    row = readme_table()[name]
    ratio = plan.macs_total_after / plan.macs_total_before
    params = f"{human_count(plan.params_total_before)} -> {human_count(plan.params_total_after)}"
    macs = f"{human_count(plan.macs_total_before)} -> {human_count(plan.macs_total_after)}"
    assert (row[3], row[4], row[5]) == (str(len(plan.swaps)), params, f"{macs} ({ratio:.3f}x)")

"""Analyses of converted models: effective receptive field, cost and latency, ONNX export.

- `erf`: the ERF maps of Luo et al. 2016 and their high-contribution area ratios;
  `erf_plot` draws both models on one log colour scale.
- `bench`: params, MACs (ParC counted as its spatial form) and median CPU latency.
- `export`: ONNX export with a non-FFT backend, checked with onnxruntime.
- `pair`: an original model and its conversion, for the analyses to compare.
"""

from parc_surgery.analysis.bench import bench_pair, latency_stats
from parc_surgery.analysis.erf import (
    area_ratios,
    compare_erf,
    erf_map,
    image_inputs,
    random_inputs,
)
from parc_surgery.analysis.erf_plot import plot_erf_pair, write_erf_png
from parc_surgery.analysis.export import export_onnx, onnx_op_types
from parc_surgery.analysis.pair import ModelPair, convert_pair

__all__ = [
    "ModelPair",
    "area_ratios",
    "bench_pair",
    "compare_erf",
    "convert_pair",
    "erf_map",
    "export_onnx",
    "image_inputs",
    "latency_stats",
    "onnx_op_types",
    "plot_erf_pair",
    "random_inputs",
    "write_erf_png",
]

"""Analyses of converted models: receptive field, class activation maps, cost, ONNX export.

- `erf`: the ERF maps of Luo et al. 2016 and their high-contribution area ratios;
  `erf_plot` draws both models on one log colour scale.
- `cam`: Grad-CAM / Grad-CAM++ / LayerCAM maps (torchcam, the `analysis` extra) of both
  models and their numbers; `cam_plot` draws them over the pictures; `images` reads
  image files through timm's eval transform.
- `bench`: params, MACs (ParC counted as its spatial form) and median CPU latency.
- `export`: ONNX export with a non-FFT backend, checked with onnxruntime.
- `pair`: an original model and its conversion (converted now, or a checkpoint and the
  original rebuilt from its recipe), for the analyses to compare.
"""

from parc_surgery.analysis.bench import bench_pair, latency_stats
from parc_surgery.analysis.cam import cam_maps, cam_summary, compare_cam
from parc_surgery.analysis.cam_plot import write_cam_png
from parc_surgery.analysis.erf import (
    area_ratios,
    compare_erf,
    erf_map,
    image_inputs,
    random_inputs,
)
from parc_surgery.analysis.erf_plot import plot_erf_pair, write_erf_png
from parc_surgery.analysis.export import export_onnx, onnx_op_types
from parc_surgery.analysis.images import ImageBatch, load_images
from parc_surgery.analysis.pair import ModelPair, checkpoint_pair, convert_pair

__all__ = [
    "ImageBatch",
    "ModelPair",
    "area_ratios",
    "bench_pair",
    "cam_maps",
    "cam_summary",
    "checkpoint_pair",
    "compare_cam",
    "compare_erf",
    "convert_pair",
    "erf_map",
    "export_onnx",
    "image_inputs",
    "latency_stats",
    "load_images",
    "onnx_op_types",
    "plot_erf_pair",
    "random_inputs",
    "write_cam_png",
    "write_erf_png",
]

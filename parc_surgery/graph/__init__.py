"""timm-aware FX tracing, per-module shapes, strides, stages and block containers."""

from parc_surgery.graph.analysis import analyze, model_name_of
from parc_surgery.graph.containers import (
    container_blocks,
    enclosing_block,
    find_containers,
    is_container,
)
from parc_surgery.graph.input_size import (
    DEFAULT_INPUT_SIZE,
    default_input_size,
    parse_input_size,
    resolve_input_size,
)
from parc_surgery.graph.model_graph import ModelGraph, ModuleInfo, StageInfo
from parc_surgery.graph.stages import stage_of_stride
from parc_surgery.graph.tracing import ParcTracer, trace

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "ModelGraph",
    "ModuleInfo",
    "ParcTracer",
    "StageInfo",
    "analyze",
    "container_blocks",
    "default_input_size",
    "enclosing_block",
    "find_containers",
    "is_container",
    "model_name_of",
    "parse_input_size",
    "resolve_input_size",
    "stage_of_stride",
    "trace",
]

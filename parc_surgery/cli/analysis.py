"""`parc-surgery erf`, `bench` and `export`: compare and ship converted models.

Argument parsing and exit codes only; the work lives in parc_surgery.analysis.
Importing this module registers the three commands on `parc_surgery.cli.app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from parc_surgery.cli import app
from parc_surgery.cli.common import (
    EXIT_CODE_HELP,
    Output,
    conversion_kwargs,
    handle_errors,
    parse_size,
    set_threads,
)
from parc_surgery.cli.options import (
    CheckpointArg,
    CheckpointSizeOpt,
    DataFormat,
    DeviceOpt,
    ExportImpl,
    ExportImplOpt,
    ForceOpt,
    FormatOpt,
    Impl,
    ImplOpt,
    InputSizeOpt,
    ModelArgsOpt,
    ModelOrCheckpointArg,
    OriginalWeightsOpt,
    QuietOpt,
    RandomOriginalOpt,
    RulesOpt,
    SeedOpt,
    StagesOpt,
    ThreadsOpt,
    WeightsOpt,
)
from parc_surgery.errors import UsageError
from parc_surgery.extras import require_extra

__all__ = ["bench_command", "erf_command", "export_command"]


def _pair(ui: Output, model: str, **kwargs):
    from parc_surgery.analysis.pair import convert_pair

    with ui.steps(f"converting {model}") as on_step:
        pair = convert_pair(model, on_step=on_step, **kwargs)
    ui.info(
        f"{model}: {len(pair.plan.swaps)} swaps in stages {pair.stages_label} "
        f"at {pair.input_size[0]}x{pair.input_size[1]}"
    )
    if not pair.plan.swaps:
        ui.warn("no rule matched a block in the chosen stages: both models are the same")
    return pair


def _emit(ui: Output, fmt: str, data: dict, table) -> None:
    from parc_surgery.analysis.render import json_ready
    from parc_surgery.report import dumps

    if fmt == "json":
        ui.json(dumps(json_ready(data)))
    elif not ui.quiet:
        ui.out.print(table)


@app.command(name="erf", epilog=EXIT_CODE_HELP)
@handle_errors
def erf_command(
    model: ModelOrCheckpointArg,
    stages: StagesOpt = None,
    rules: RulesOpt = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder of images (resized, normalised with the model's "
            "mean/std) to average the ERF over.",
        ),
    ] = None,
    random: Annotated[
        int | None,
        typer.Option(
            "--random", help="Average over N seeded random inputs instead (the default, with N=8)."
        ),
    ] = None,
    input_size: InputSizeOpt = None,
    weights: WeightsOpt = None,
    original_weights: OriginalWeightsOpt = None,
    random_original: RandomOriginalOpt = False,
    model_arg: ModelArgsOpt = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            "--out",
            help="PNG to write (--out: old spelling). Default: <model>-erf.png.",
        ),
    ] = None,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Effective receptive field of MODEL before and after conversion (Luo et al. 2016).

    The gradient of the last feature map's centre unit with respect to the input,
    absolute, summed over colour channels, averaged over the inputs. Writes a PNG of both
    maps on one log colour scale and prints the high-contribution area ratios: the
    smallest share of the input area holding 20%, 50% and 90% of the gradient mass.
    The published ERF comparisons use trained models: pass --weights; at random
    initialisation the difference can be small or even reversed.

    MODEL is a timm name (converted now with --stages / --rules / --model-arg; both
    models share every unswapped weight) or a parc-surgery checkpoint: then the
    converted model is the checkpoint and the original is rebuilt from its recipe with
    --original-weights FILE (e.g. a trained original against its recovered conversion).
    """
    import torch

    from parc_surgery.analysis.erf import (
        compare_erf,
        image_inputs,
        normalisation_of,
        random_inputs,
    )
    from parc_surgery.analysis.erf_plot import write_erf_png
    from parc_surgery.analysis.pair import is_checkpoint_path
    from parc_surgery.analysis.render import erf_table
    from parc_surgery.checkpoint import check_output
    from parc_surgery.models import file_stem, input_channels

    require_extra("analysis", "matplotlib")  # before the slow part
    fmt = DataFormat(fmt).value
    set_threads(threads)
    if images is not None and random is not None:
        raise UsageError("give --images or --random, not both")
    if images is not None and not images.is_dir():
        raise UsageError(f"--images {images}: not a directory")
    from_checkpoint = is_checkpoint_path(model)
    _check_erf_source(
        from_checkpoint,
        conversion={"--stages": stages, "--rules": rules, "--model-arg": model_arg},
        weights=weights,
        original=original_weights is not None or random_original,
    )
    ui = Output(quiet=quiet, fmt=fmt)
    stem = Path(model).stem if from_checkpoint else file_stem(model)
    target = out if out is not None else f"{stem}-erf.png"
    inputs = [weights, original_weights] + ([model] if from_checkpoint else [])
    check_output(target, force=force, inputs=inputs)  # fail before the slow part, not after
    if from_checkpoint:
        from parc_surgery.cli.cam import checkpoint_pair_for

        pair = checkpoint_pair_for(
            ui, Path(model), original_weights=original_weights, random_original=random_original
        )
        size = parse_size(input_size) or pair.input_size
    else:
        pair = _pair(
            ui,
            model,
            seed=seed,
            **conversion_kwargs(
                stages=stages,
                rules=rules,
                input_size=input_size,
                model_arg=model_arg,
                weights=weights,
            ),
        )
        size = pair.input_size
    if images is not None:
        inputs = image_inputs(images, size, *normalisation_of(pair.original))
        kind = "image"
    else:
        count = 8 if random is None else random
        channels = input_channels(pair.original)
        inputs = random_inputs(count, size, seed=seed, channels=channels)
        kind = "random"
    result = compare_erf(pair.original, pair.converted, inputs)
    maps = result.pop("maps")
    if pair.plan.swaps and torch.allclose(maps["original"], maps["converted"], rtol=1e-4, atol=0):
        ui.warn(
            "the two ERFs are the same: the swapped layers do not reach the output with "
            "these weights (timm initialises some blocks' last norm to zero, e.g. ResNet's "
            "zero_init_last); measure trained --weights, or pass --model-arg "
            "zero_init_last=false"
        )
    result = {
        "model": pair.plan.model,
        "checkpoint": pair.checkpoint,
        "original_weights": pair.original_weights,
        "stages": list(pair.plan.stages),
        "input_size": list(size),
        "inputs": {"kind": kind, "count": int(inputs.shape[0])},
        **result,
    }
    notes = tuple(
        f"50% of the mass in {result[name]['area_ratio']['50'] * 100:.1f}% of the area"
        for name in ("original", "converted")
    )
    result["output"] = write_erf_png(
        maps["original"],
        maps["converted"],
        target,
        force=force,
        notes=notes,
        title=f"ERF of {Path(model).name if from_checkpoint else model}, ParC in stages "
        f"{pair.stages_label} ({size[0]}x{size[1]}, {inputs.shape[0]} {kind} inputs; "
        f"original weights: {pair.original_weights})",
    )
    _emit(ui, fmt, result, erf_table(result))
    ui.info(f"wrote {result['output']}")


def _check_erf_source(
    from_checkpoint: bool, *, conversion: dict, weights: Path | None, original: bool
) -> None:
    """UsageError for options that do not apply to erf's kind of MODEL (name or checkpoint)."""
    if from_checkpoint:
        given = [flag for flag, value in conversion.items() if value]
        if given:
            raise UsageError(
                f"{' and '.join(given)} cannot be used with a checkpoint: its recipe fixes "
                "the conversion",
                hint="drop the option, or give a timm model name to convert it now",
            )
        if weights is not None:
            raise UsageError(
                "--weights does not apply to a checkpoint",
                hint="give the original model's weights with --original-weights FILE",
            )
    elif original:
        raise UsageError(
            "--original-weights and --random-original apply to a checkpoint only",
            hint="with a model name both models share the original's weights: use --weights",
        )


def _check_device(device: str):
    """The torch.device `device` names, or a UsageError saying why it cannot run."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {device}: no CUDA device is available here",
            hint="run with --device cpu, or on a machine with a GPU and a CUDA build of torch",
        )
    if parsed.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: only cpu and cuda are supported")
    return parsed


@app.command(name="bench", epilog=EXIT_CODE_HELP)
@handle_errors
def bench_command(
    model: ModelOrCheckpointArg,
    stages: StagesOpt = None,
    rules: RulesOpt = None,
    input_size: InputSizeOpt = None,
    model_arg: ModelArgsOpt = None,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            "--batch",
            help="Batch size of the timed runs (--batch: old spelling). "
            "Default: 1 (32 with --train).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    impl: ImplOpt = Impl.auto,
    runs: Annotated[
        int | None,
        typer.Option("--runs", help="Timed runs per model. Default: 20 (5 with --train)."),
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 3,
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="Time training steps (forward, backward, SGD step) in train mode."
        ),
    ] = False,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx",
            help="Time the ONNX exports in onnxruntime (CPU, batch 1); --impl picks the "
            "exported backend (auto: per layer, from onnxruntime timings).",
        ),
    ] = False,
    compile_models: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Time both models compiled with torch.compile (inductor, weights frozen "
            "in inference); needs a C++ compiler, the warm-up includes compiling.",
        ),
    ] = False,
    fuse: Annotated[
        bool,
        typer.Option(
            "--fuse/--no-fuse",
            help="Run the inference form (parc_surgery.fuse: BatchNorms folded into "
            "adjacent convs and ParCs). Default: fused.",
        ),
    ] = True,
    device: DeviceOpt = "cpu",
    clock: Annotated[
        str,
        typer.Option(
            "--clock",
            help="wall (elapsed time) or cpu (the thread's CPU time: needs --threads 1; "
            "steadier on a busy machine).",
        ),
    ] = "wall",
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Params, MACs and median latency of MODEL before and after conversion.

    MODEL is a timm name (converted now) or a parc-surgery checkpoint (its original is
    rebuilt from the recipe; the weights do not change the timings).

    MACs are counted at batch 1 with ParC in its spatial form. By default both models run
    in eval mode under torch.inference_mode, timed in alternating rounds after a warm-up;
    --train times training steps instead, --onnx the exported models in onnxruntime.
    """
    from parc_surgery.analysis.render import bench_table

    fmt = DataFormat(fmt).value
    impl = Impl(impl).value
    if train and onnx:
        raise UsageError("give --train or --onnx, not both")
    if onnx and (compile_models or device != "cpu" or impl == "fft"):
        raise UsageError(
            "--onnx times onnxruntime on the CPU with an exportable backend",
            hint="drop --compile / --device, and use --impl auto, spatial or circulant",
        )
    batch = batch if batch is not None else (32 if train else 1)
    runs = runs if runs is not None else (5 if train else 20)
    if onnx and batch != 1:
        raise UsageError("--onnx times batch 1 only (the export's batch axis is dynamic)")
    for name, value, least in (
        ("--batch-size", batch, 1),
        ("--runs", runs, 1),
        ("--warmup", warmup, 0),
        ("--threads", 1 if threads is None else threads, 1),
    ):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}")
    if clock not in ("wall", "cpu"):
        raise UsageError(f"--clock {clock!r} is not one of wall, cpu")
    if clock == "cpu" and threads != 1:
        raise UsageError("--clock cpu times one thread", hint="add --threads 1")
    parsed_device = _check_device(device)
    ui = Output(quiet=quiet, fmt=fmt)
    from parc_surgery.analysis.pair import is_checkpoint_path

    if is_checkpoint_path(model):
        # Timings do not depend on the weights: the original is rebuilt at random init.
        from parc_surgery.analysis.pair import checkpoint_pair

        _check_erf_source(
            True,
            conversion={"--stages": stages, "--rules": rules, "--model-arg": model_arg},
            weights=None,
            original=False,
        )
        with ui.steps(f"loading {Path(model).name}") as on_step:
            on_step("load")
            pair = checkpoint_pair(model, original_weights=None, random_original=True)
        ui.info(
            f"{model}: {pair.plan.model}, {len(pair.plan.swaps)} swaps in stages "
            f"{pair.stages_label} at {pair.input_size[0]}x{pair.input_size[1]}"
        )
        size = parse_size(input_size) or pair.input_size
    else:
        pair = _pair(
            ui,
            model,
            **conversion_kwargs(
                stages=stages, rules=rules, input_size=input_size, model_arg=model_arg
            ),
        )
        size = pair.input_size
    what = "training steps" if train else ("onnxruntime runs" if onnx else "runs")
    ui.info(f"timing {runs} {what} of each model after {warmup} warm-up runs")
    common = dict(threads=threads, impl=impl, runs=runs, warmup=warmup, clock=clock)
    if onnx:
        from parc_surgery.analysis.bench_onnx import bench_onnx_pair

        figures = bench_onnx_pair(pair.original, pair.converted, size, fuse=fuse, **common)
    else:
        if train:
            from parc_surgery.analysis.bench_train import bench_train_pair as run
        else:
            from parc_surgery.analysis.bench import bench_pair as run
        figures = run(
            pair.original,
            pair.converted,
            size,
            batch=batch,
            device=parsed_device,
            compile=compile_models,
            **({} if train else {"fuse": fuse}),
            **common,
        )
    result = {
        "model": model,
        "stages": list(pair.plan.stages),
        "swaps": len(pair.plan.swaps),
        **figures,
    }
    _emit(ui, fmt, result, bench_table(result))


@app.command(name="export", epilog=EXIT_CODE_HELP)
@handle_errors
def export_command(
    checkpoint: CheckpointArg,
    out: Annotated[
        str,
        typer.Option("--output", "-o", "--out", help="ONNX file to write (--out: old spelling)."),
    ],
    input_size: CheckpointSizeOpt = None,
    impl: ExportImplOpt = ExportImpl.auto,
    fuse: Annotated[
        bool,
        typer.Option(
            "--fuse/--no-fuse",
            help="Export the inference form (parc_surgery.fuse: BatchNorms folded into "
            "adjacent convs and ParCs). Default: fused.",
        ),
    ] = True,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize",
            help="int8: write an INT8 model (onnxruntime static quantization, QDQ) "
            "calibrated on --calibration-data.",
        ),
    ] = None,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            "--calibration-data",
            help="Image folder (train/ and/or val/, class folders inside) for --quantize: "
            "calibrates on train/ (else val/), reports FP32 and INT8 top-1 on val/.",
        ),
    ] = None,
    calibration_images: Annotated[
        int,
        typer.Option("--calibration-images", help="Images --quantize calibrates on (at most)."),
    ] = 256,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Export a converted checkpoint to ONNX (opset 17) and check it with onnxruntime.

    The export traces the model at one input size: ParC kernels and position encodings
    are resampled for that size while tracing, so the file runs at that height and width
    only (the batch axis is dynamic). Export again with --input-size for another size.
    The graph holds Conv / MatMul ops only (no DFT); the file is written only when
    onnxruntime's output matches PyTorch's within 1e-4 (scaled by the output's largest
    magnitude when above 1) on a seeded batch of 2.
    """
    from parc_surgery.analysis.export import export_onnx
    from parc_surgery.analysis.render import export_lines
    from parc_surgery.checkpoint import check_output, load, read_recipe

    require_extra("onnx", "onnx", "onnxruntime")
    fmt = DataFormat(fmt).value
    set_threads(threads)
    impl = ExportImpl(impl).value
    if quantize is not None and quantize != "int8":
        raise UsageError(f"--quantize {quantize!r} is not supported", hint="use --quantize int8")
    if quantize and calibration_data is None:
        raise UsageError(
            "--quantize int8 needs --calibration-data DIR",
            hint="point it at an image folder with train/ and/or val/ class folders",
        )
    if calibration_data is not None and not quantize:
        raise UsageError("--calibration-data is only used with --quantize int8")
    ui = Output(quiet=quiet, fmt=fmt)
    check_output(out, force=force, inputs=[checkpoint])  # fail before the slow part
    recipe = read_recipe(checkpoint)
    size = parse_size(input_size) or tuple(recipe["plan"]["input_size"])
    with ui.steps(f"exporting {checkpoint.name}") as on_step:
        on_step("load")
        model = load(checkpoint)
        on_step("export")
        if quantize:
            from parc_surgery.analysis.quantize import quantize_export

            result = quantize_export(
                model,
                out,
                input_size=size,
                data=calibration_data,
                calibration=calibration_images,
                impl=impl,
                fuse=fuse,
                recipe=recipe,
                force=force,
            )
        else:
            result = export_onnx(
                model, out, input_size=size, force=force, impl=impl, fuse=fuse, recipe=recipe
            )
    if fmt == "json":
        _emit(ui, fmt, result, None)
        return
    if quantize:
        ui.info(
            f"wrote {result['output']} (INT8 QDQ, {result['bytes']} bytes; FP32 "
            f"{result['fp32_bytes']}), calibrated on {result['calibration_images']} images"
        )
        if "int8_top1" in result:
            ui.info(
                f"top-1 on {result['val_images']} val images: FP32 "
                f"{result['fp32_top1']:.2f}%, INT8 {result['int8_top1']:.2f}%"
            )
        return
    for line in export_lines(result):
        ui.info(line)

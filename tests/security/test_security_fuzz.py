"""The fuzzed front door: random files into every loader, bounded in examples, time and memory.

Allowed outcomes: success, or a ParcSurgeryError with a documented exit code and a
one-paragraph message. Never another exception (a traceback), never a file written
outside the folder the command was given, never more than a bounded amount of memory:
the checkpoint fuzzers run under an address-space limit (RLIMIT_AS) of what the process
already maps plus 3 GiB, so a recipe that makes torch or timm allocate 96 GB fails the
test with a MemoryError instead of taking the machine down.

Reproducible: every test is derandomized (a fixed seed per test) and keeps no example
database. About a minute in all on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import parc_surgery as ps
from parc_surgery.batch import load_jobs
from parc_surgery.cli import app
from parc_surgery.errors import EXIT_CODES, ParcSurgeryError
from parc_surgery.rules import load_rules, match

runner = CliRunner()
MODEL = "test_convnext"


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_documented(err: ParcSurgeryError) -> None:
    assert err.exit_code in EXIT_CODES and err.exit_code not in (0, 1), err.exit_code
    message = err.message
    assert message and "\n\n" not in message and len(message) < 3000, message
    assert "Traceback" not in message


def assert_clean_cli(result, allowed: set[int]) -> None:
    """A CLI run ended in an allowed exit code, with an 'error:' line and no traceback."""
    assert result.exit_code in allowed, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code:
        assert "error: " in result.stderr, result.stderr


@contextlib.contextmanager
def bounded_memory(extra: int = 3 << 30):
    """Cap this process's address space at what it maps now plus `extra` bytes."""
    if not os.path.exists("/proc/self/statm"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * resource.getpagesize()
    limit = mapped + extra if hard == resource.RLIM_INFINITY else min(mapped + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- rules and jobs files ------------------------------------------------------------

WORDS = ["version", "rules", "match", "replace", "with", "module", "op", "stages", "index"]
WORDS += ["fraction", "name", "defaults", "leaf", "pe", "impl", "init", "kernel_size", "jobs"]
WORDS += ["model", "output", "weights", "model_args", "input_size", "dims", "<<", "seed"]
WORDS += ["parc_bottleneck", "parc_dwconv", "Bottleneck", "ConvNeXtBlock", "depthwise_conv"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True),
    st.sampled_from(WORDS + ["1:", "-2:", "first_in_container", "auto", "../x", "/etc/x"]),
    st.text(max_size=20),
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=8), inner, max_size=6),
    ),
    max_leaves=40,
)
YAML_TEXT = st.text(alphabet="[]{}&*!|>:-,#'\"\n\t ?%@`<=~abcdefrulesvrion0123.", max_size=400)


@pytest.fixture(scope="module")
def small_graph():
    from parc_surgery.graph import analyze
    from parc_surgery.models import create_model

    model = create_model(MODEL).eval()
    return model, analyze(model, (64, 64))


def load_both(path: Path, small_graph) -> None:
    """Rules and jobs loaders on one file; a valid rules file is also matched to a model."""
    tracemalloc.start()
    try:
        for load in (load_rules, load_jobs):
            try:
                loaded = load(path)
            except ParcSurgeryError as err:
                assert_documented(err)
                continue
            if load is load_rules:
                model, graph = small_graph
                try:
                    match(loaded, graph, model, None)
                except ParcSurgeryError as err:
                    assert_documented(err)
            else:
                for job in loaded:
                    if isinstance(job, ParcSurgeryError):
                        assert_documented(job)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


@fuzz_settings(150)
@given(data=st.binary(max_size=1024))
def test_fuzz_random_bytes_into_rules_and_jobs_loaders(data, small_graph):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(data)
        load_both(path, small_graph)


@fuzz_settings(150)
@given(text=YAML_TEXT)
def test_fuzz_yaml_syntax_into_rules_and_jobs_loaders(text, small_graph):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text)
        load_both(path, small_graph)


@fuzz_settings(150)
@given(
    structure=STRUCTURES,
    rule=st.fixed_dictionaries(
        {"match": STRUCTURES, "replace": STRUCTURES | st.just({"with": "parc_dwconv"})}
    ),
)
def test_fuzz_yaml_structures_into_rules_and_jobs_loaders(structure, rule, small_graph):
    documents = [
        structure,
        {"version": 1, "rules": [rule]},
        {"version": 1, "rules": [{"match": {"op": "depthwise_conv"}, **rule}]},
        {"jobs": [structure], "defaults": structure if isinstance(structure, dict) else {}},
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        for document in documents:
            path.write_text(yaml.safe_dump(document))
            load_both(path, small_graph)


# --- checkpoints, export and --weights ----------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-good")
    checkpoint = folder / "good.safetensors"
    ps.convert(MODEL, input_size=(64, 64), output=str(checkpoint))
    state = ps.create_model(MODEL).state_dict()
    weights_st = folder / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights_st))
    weights_pt = folder / "w.pth"
    torch.save(state, weights_pt)
    return {
        "checkpoint": checkpoint.read_bytes(),
        "safetensors": weights_st.read_bytes(),
        "pth": weights_pt.read_bytes(),
    }


FLIPS = st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=3)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats()
    | st.sampled_from(["/etc/passwd", "../../x", "hf-hub:timm/resnet50", "parc_dwconv", ""])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def mutated(data: bytes, flips, cut) -> bytes:
    out = bytearray(data)
    for where, mask in flips:
        out[min(int(where * len(out)), len(out) - 1)] ^= mask
    return bytes(out[: int(cut * len(out))] if cut is not None else out)


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from paths_of(item, (*prefix, number))


def edited_recipe(good_bytes: bytes, folder: Path, choice: int, value, delete: bool) -> Path:
    source = folder / "source.safetensors"
    source.write_bytes(good_bytes)
    with safe_open(str(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    recipe = json.loads(metadata["recipe"])
    paths = [p for p in paths_of(recipe) if p]
    path = paths[choice % len(paths)]
    parent = recipe
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    target = folder / "edited.safetensors"
    save_file(tensors, str(target), metadata={**metadata, "recipe": json.dumps(recipe)})
    source.unlink()
    return target


def load_allowed(path: Path) -> None:
    before = listing(path.parent)
    try:
        with bounded_memory():
            ps.load(path)
    except ParcSurgeryError as err:
        assert_documented(err)
        # A recipe whose source has no name is a model object's checkpoint: load(model=...)
        # is the documented way (exit 2); every other edit is a damaged checkpoint.
        needs_model = "cannot build by itself" in err.message
        assert err.exit_code == (2 if needs_model else 6), err.message
    assert listing(path.parent) == before  # loading writes nothing


@fuzz_settings(40)
@given(flips=FLIPS, cut=st.none() | st.floats(0, 1))
def test_fuzz_flips_and_truncations_into_load(flips, cut, good):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.safetensors"
        path.write_bytes(mutated(good["checkpoint"], flips, cut))
        load_allowed(path)


def test_every_flip_of_tensor_data_is_detected(good, tmp_path):
    data = good["checkpoint"]
    start = 8 + struct.unpack("<Q", data[:8])[0]
    for position in range(start, len(data), max(1, (len(data) - start) // 25)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        path = tmp_path / "one-bit.safetensors"
        path.write_bytes(bytes(flipped))
        with pytest.raises(ParcSurgeryError, match="does not match the checksum"):
            ps.load(path)


@fuzz_settings(40)
@given(choice=st.integers(0, 10_000), value=JSON_VALUES, delete=st.booleans())
def test_fuzz_recipe_edits_into_load(choice, value, delete, good):
    with tempfile.TemporaryDirectory() as folder:
        load_allowed(edited_recipe(good["checkpoint"], Path(folder), choice, value, delete))


@fuzz_settings(6)
@given(
    kind=st.sampled_from(["flip", "edit"]),
    flips=FLIPS,
    choice=st.integers(0, 10_000),
    value=JSON_VALUES,
)
def test_fuzz_export_writes_only_its_output(kind, flips, choice, value, good):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if kind == "flip":
            path = folder / "fuzzed.safetensors"
            path.write_bytes(mutated(good["checkpoint"], flips, None))
        else:
            path = edited_recipe(good["checkpoint"], folder, choice, value, delete=False)
        out = folder / "out" / "model.onnx"
        out.parent.mkdir()
        with bounded_memory():
            result = runner.invoke(app, ["export", str(path), "-o", str(out)])
        assert_clean_cli(result, {0, 6, 9})
        expected = {path.name, "out"} | ({"out/model.onnx"} if result.exit_code == 0 else set())
        assert listing(folder) == expected


@fuzz_settings(12)
@given(
    kind=st.sampled_from(["safetensors", "pth"]),
    flips=FLIPS,
    cut=st.none() | st.floats(0, 1),
)
def test_fuzz_weights_files_into_convert(kind, flips, cut, good):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        weights = folder / f"w.{kind}"
        weights.write_bytes(mutated(good[kind], flips, cut))
        out = folder / "out.safetensors"
        args = ["convert", MODEL, "--input-size", "64", "--weights", str(weights)]
        with bounded_memory():
            result = runner.invoke(app, [*args, "-o", str(out), "--verify", "-q"])
        assert_clean_cli(result, {0, 5, 6})
        assert listing(folder) == {weights.name} | ({out.name} if result.exit_code == 0 else set())

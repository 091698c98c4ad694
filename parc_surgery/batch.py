"""Batch conversion: a YAML list of jobs, run in order, each failure isolated, each confined.

A job file:

    defaults: {stages: [3, 4], input_size: 224}   # optional, merged into every job
    jobs:
      - model: resnet50
        output: resnet50-parc.safetensors       # relative to --output-dir
      - {model: convnext_tiny, model_args: {dims: [48, 96, 192, 384]}}

A jobs file may come from a pull request, so what it can reach is confined:
outputs resolve inside the output folder (after '..' and symlinks; subfolders are
created), and relative `weights` / `rules` paths inside the jobs file's folder; an
absolute path or an escape fails that job unless `allow_outside`. Two jobs that would
write one file make the whole file invalid before anything runs. The file itself is
read by the one safe YAML loader (size, alias, depth limits) and errors point at
file:line:column.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parc_surgery.errors import OutputError, ParcSurgeryError, RulesError
from parc_surgery.model_args import check_model_args
from parc_surgery.models import file_stem
from parc_surgery.rules.validation import positioned_error
from parc_surgery.rules.yaml_source import DataPath, Positions, read_yaml_file

__all__ = [
    "BatchInterrupted",
    "BatchTerminated",
    "Job",
    "JobFile",
    "JobResult",
    "load_jobs",
    "run_batch",
]

_HINT = "see README, Batch jobs"


class Job(BaseModel):
    """One conversion; the keys mirror parc-convert's options."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="timm model name", max_length=128)
    name: str | None = Field(None, description="label in the summary (default: the model)")
    stages: list[int] | None = Field(None, description="stages to convert (default: rules')")
    rules: str | None = Field(None, description="rules file or shipped config name")
    input_size: int | str | list[int] | None = Field(None, description="224, '224x288' or [H, W]")
    model_args: dict[str, Any] = Field(default_factory=dict, description="timm kwargs")
    weights: str | None = Field(None, description="local state_dict to load first")
    output: str | None = Field(None, description="checkpoint path, inside --output-dir")
    force: bool = Field(False, description="overwrite an existing output")
    strict: bool = Field(False, description="fail when a rule matches nothing")
    allow_empty: bool = Field(False, description="write the checkpoint when nothing is swapped")
    seed: int = Field(0, ge=0, lt=1 << 63, description="seed for new parameters")

    @field_validator("input_size")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) != 2:
            raise ValueError("input_size as a list must be [H, W]")
        if value is not None:
            try:
                _parsed_size(value)
            except ParcSurgeryError as err:
                raise ValueError(err.what) from None
        return value

    @field_validator("model_args")
    @classmethod
    def _model_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return check_model_args(value, where="model_args")
        except ParcSurgeryError as err:
            raise ValueError(err.message) from None

    def size(self) -> tuple[int, int] | None:
        return None if self.input_size is None else _parsed_size(self.input_size)


def _parsed_size(value: int | str | list[int]) -> tuple[int, int]:
    from parc_surgery.graph import parse_input_size

    if isinstance(value, list):
        return parse_input_size(f"{value[0]}x{value[1]}")
    return parse_input_size(str(value))


class JobFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    jobs: list[dict[str, Any]]


@dataclass
class JobResult:
    name: str
    model: str
    ok: bool
    exit_code: int
    error: str | None = None
    output: str | None = None
    output_sha256: str | None = None
    swaps: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BatchTerminated(KeyboardInterrupt):
    """SIGTERM during a batch (raised by the CLI's handler): stops it as Ctrl-C does."""

    exit_code = 143
    reason = "stopped (SIGTERM)"


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a batch: `results` holds the jobs done so far (the
    interrupted one last); `exit_code` is 130 (Ctrl-C) or 143 (SIGTERM)."""

    def __init__(self, results: list[JobResult], skipped: int, exit_code: int = 130):
        super().__init__()
        self.results = results
        self.skipped = skipped
        self.exit_code = exit_code


@dataclass
class _JobPositions:
    """Where a merged job's keys were written: in the job itself, else in `defaults`."""

    positions: Positions
    prefix: DataPath  # ("jobs", n), or (n,) in a file that is a bare list
    own: frozenset

    def _path(self, path: DataPath) -> DataPath:
        if path and path[0] not in self.own:
            return ("defaults", *path)
        return (*self.prefix, *path)

    def nearest(self, path: DataPath, *, key: bool = False):
        return self.positions.nearest(self._path(path), key=key)

    def where(self, path: DataPath, *, key: bool = False) -> str:
        return self.positions.where(self._path(path), key=key)


def _job_model_at(path: DataPath) -> type[BaseModel] | None:
    return Job if not path else None


def _parse_jobs(path: Path) -> tuple[list[Job | ParcSurgeryError], Positions, DataPath]:
    data, positions = read_yaml_file(path, kind="jobs file")
    prefix: DataPath = ("jobs",) if isinstance(data, dict) else ()
    try:
        spec = JobFile.model_validate(data if isinstance(data, dict) else {"jobs": data})
    except ValidationError as err:
        raise positioned_error(
            err,
            data,
            positions,
            model_at=lambda p: JobFile if not p else None,
            hint=_HINT,
            prefix=() if prefix else ("jobs",),
        ) from None
    jobs: list[Job | ParcSurgeryError] = []
    for number, raw in enumerate(spec.jobs):
        merged = {**spec.defaults, **raw}
        try:
            jobs.append(Job.model_validate(merged))
        except ValidationError as err:
            located = _JobPositions(positions, (*prefix, number), frozenset(raw))
            error = positioned_error(err, merged, located, model_at=_job_model_at, hint=_HINT)
            error.what = f"job {number}: {error.what}"
            jobs.append(error)
    return jobs, positions, prefix


def load_jobs(path: str | Path) -> list[Job | ParcSurgeryError]:
    """The jobs of a file; a job that does not validate becomes its error, in place."""
    return _parse_jobs(Path(path))[0]


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _confined(value: str, base: Path, *, what: str, allow_outside: bool, error: type) -> str:
    """`value` joined to `base` (as written: a trailing '/' stays); `error` if it is
    absolute or resolves, after '..' and symlinks, outside `base`."""
    if os.path.isabs(value):
        if allow_outside:
            return value
        raise error(
            f"{what} {value!r} is an absolute path; a jobs file may only name paths inside {base}",
            hint="give a relative path, or pass --allow-outside if you trust the jobs file",
        )
    joined = os.path.join(base, value)
    real = os.path.realpath(joined)
    if not allow_outside and not _inside(real, os.path.realpath(base)):
        raise error(
            f"{what} {value!r} resolves to {real}, outside {base} (through '..' or a symlink)",
            hint="keep it inside that folder, or pass --allow-outside if you trust the jobs file",
        )
    return joined


def _output_of(job: Job, out_base: Path, allow_outside: bool) -> str:
    value = job.output or f"{file_stem(job.model)}-parc.safetensors"
    return _confined(value, out_base, what="output", allow_outside=allow_outside, error=OutputError)


def _check_duplicates(outputs: dict[int, str], positions: Positions, prefix: DataPath) -> None:
    """RulesError (the whole file) if two jobs would write one file."""
    seen: dict[str, int] = {}
    for number, output in outputs.items():
        key = os.path.realpath(output)
        if key in seen:
            first = seen[key]
            raise RulesError(
                f"jobs {first} ({positions.line_of((*prefix, first))}) and {number} write the "
                f"same output {output}; one would overwrite the other",
                where=positions.line_of((*prefix, number)),
                hint="give each job its own output; no job was run",
            )
        seen[key] = number


def _input_of(value: str | None, base: Path, *, what: str, allow_outside: bool) -> str | None:
    if value is None:
        return None
    return _confined(value, base, what=what, allow_outside=allow_outside, error=RulesError)


def _rules_of(job: Job, base: Path, allow_outside: bool) -> str | None:
    from parc_surgery.rules import shipped_configs

    if job.rules is None or job.rules in shipped_configs():
        return job.rules
    return _input_of(job.rules, base, what="rules", allow_outside=allow_outside)


def _run_one(job: Job, output: str, base: Path, force: bool, allow_outside: bool) -> JobResult:
    from parc_surgery.pipeline import convert

    name = job.name or job.model
    started = time.perf_counter()
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)  # inside the output folder
        result = convert(
            job.model,
            output=output,
            force=force or job.force,
            seed=job.seed,
            stages=job.stages,
            rules=_rules_of(job, base, allow_outside),
            input_size=job.size(),
            model_args=job.model_args,
            weights=_input_of(job.weights, base, what="weights", allow_outside=allow_outside),
            strict=job.strict,
            allow_empty=job.allow_empty,
        )
    except ParcSurgeryError as err:
        seconds = time.perf_counter() - started
        return JobResult(name, job.model, False, err.exit_code, err.message, seconds=seconds)
    except OSError as err:  # creating the output's folder
        from parc_surgery.files import os_error

        error = os_error(Path(output).parent, err, doing="create")
        return JobResult(name, job.model, False, error.exit_code, error.message)
    except Exception as err:  # a bug in one job must not stop the others
        seconds = time.perf_counter() - started
        return JobResult(name, job.model, False, 1, f"internal error: {err!r}", seconds=seconds)
    plan = result.plan
    return JobResult(
        name,
        job.model,
        True,
        0,
        None,
        result.output,
        result.output_sha256,
        len(plan.swaps),
        plan.params_total_before,
        plan.params_total_after,
        plan.macs_total_before,
        plan.macs_total_after,
        time.perf_counter() - started,
    )


def run_batch(
    path: str | Path,
    *,
    output_dir: str | Path | None = None,
    force: bool = False,
    allow_outside: bool = False,
    on_job: Callable[[int, str], None] | None = None,
) -> list[JobResult]:
    """Run every job in order; a failing job is recorded and the next one still runs.

    Outputs go to `output_dir` (default: the jobs file's folder), relative `weights` and
    `rules` paths are read from the jobs file's folder; both confined (module docstring).
    Ctrl-C raises BatchInterrupted holding the results so far.
    """
    path = Path(path)
    base = path.parent
    out_base = Path(output_dir) if output_dir else base
    jobs, positions, prefix = _parse_jobs(path)
    prepared: dict[int, str | ParcSurgeryError] = {}
    for number, job in enumerate(jobs):
        if isinstance(job, Job):
            try:
                prepared[number] = _output_of(job, out_base, allow_outside)
            except ParcSurgeryError as err:
                prepared[number] = err
    outputs = {n: out for n, out in prepared.items() if isinstance(out, str)}
    _check_duplicates(outputs, positions, prefix)
    results: list[JobResult] = []
    try:
        for number, job in enumerate(jobs):
            if isinstance(job, ParcSurgeryError):
                results.append(JobResult(f"job {number}", "?", False, job.exit_code, job.message))
                continue
            name = job.name or job.model
            output = prepared[number]
            if isinstance(output, ParcSurgeryError):
                results.append(JobResult(name, job.model, False, output.exit_code, output.message))
                continue
            if on_job:
                on_job(number, name)
            results.append(_run_one(job, output, base, force, allow_outside))
    except KeyboardInterrupt as stop:
        code = getattr(stop, "exit_code", 130)
        reason = getattr(stop, "reason", "interrupted (Ctrl-C)")
        stopped = len(results)  # the job that was running when the signal came
        if stopped < len(jobs):
            job = jobs[stopped]
            label = (job.name or job.model, job.model) if isinstance(job, Job) else ("?", "?")
            results.append(JobResult(*label, False, code, reason))
        raise BatchInterrupted(results, len(jobs) - len(results), code) from None
    return results

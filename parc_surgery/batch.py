"""Batch conversion: a YAML list of jobs, run in order, each failure isolated.

A job file:

    defaults: {stages: [3, 4], input_size: 224}   # optional, merged into every job
    jobs:
      - model: resnet50
        output: resnet50-parc.safetensors       # relative paths: see run_batch
      - {model: convnext_tiny, model_args: {dims: [48, 96, 192, 384]}}
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parc_surgery.errors import ParcSurgeryError, RulesError

__all__ = ["Job", "JobFile", "JobResult", "load_jobs", "run_batch"]


class Job(BaseModel):
    """One conversion; the keys mirror parc-convert's options."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="timm model name")
    name: str | None = Field(None, description="label in the summary (default: the model)")
    stages: list[int] | None = Field(None, description="stages to convert (default: rules')")
    rules: str | None = Field(None, description="rules file or shipped config name")
    input_size: int | str | list[int] | None = Field(None, description="224, '224x288' or [H, W]")
    model_args: dict[str, Any] = Field(default_factory=dict, description="timm kwargs")
    weights: str | None = Field(None, description="local state_dict to load first")
    output: str | None = Field(None, description="checkpoint path")
    force: bool = Field(False, description="overwrite an existing output")
    strict: bool = Field(False, description="fail when a rule matches nothing")
    seed: int = Field(0, description="seed for new parameters")

    @field_validator("input_size")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) != 2:
            raise ValueError("input_size as a list must be [H, W]")
        return value

    def size(self) -> tuple[int, int] | None:
        if self.input_size is None:
            return None
        if isinstance(self.input_size, list):
            return (int(self.input_size[0]), int(self.input_size[1]))
        from parc_surgery.graph import parse_input_size

        return parse_input_size(str(self.input_size))


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


def load_jobs(path: str | Path) -> list[Job | ParcSurgeryError]:
    """The jobs of a file; a job that does not validate becomes its error, in place."""
    path = Path(path)
    if not path.is_file():
        raise RulesError(f"jobs file {path} does not exist", hint="check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RulesError(f"invalid YAML: {getattr(err, 'problem', err)}", where=where) from None
    try:
        spec = JobFile.model_validate(data if isinstance(data, dict) else {"jobs": data})
    except ValidationError as err:
        raise RulesError(
            _first_error(err), where=str(path), hint="see README, Batch jobs"
        ) from None
    jobs: list[Job | ParcSurgeryError] = []
    for number, raw in enumerate(spec.jobs):
        try:
            jobs.append(Job.model_validate({**spec.defaults, **raw}))
        except ValidationError as err:
            jobs.append(RulesError(f"job {number}: {_first_error(err)}", where=str(path)))
    return jobs


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top)"
    return f"{loc}: {first['msg']} (found {first.get('input')!r})"


def run_batch(
    path: str | Path,
    *,
    output_dir: str | Path | None = None,
    force: bool = False,
    on_job=None,
) -> list[JobResult]:
    """Run every job in order; a failing job is recorded and the next one still runs.

    Relative output and weights paths are resolved against `output_dir` (outputs) and
    the jobs file's folder (weights, rules); a job without output writes
    `<model>-parc.safetensors` into `output_dir`, else beside the jobs file.
    """
    from parc_surgery.models import file_stem
    from parc_surgery.pipeline import convert

    path = Path(path)
    base = path.parent
    out_base = Path(output_dir) if output_dir else base
    results = []
    for number, job in enumerate(load_jobs(path)):
        if isinstance(job, ParcSurgeryError):
            results.append(JobResult(f"job {number}", "?", False, job.exit_code, job.message))
            continue
        name = job.name or job.model
        if on_job:
            on_job(number, name)
        output = out_base / (job.output or f"{file_stem(job.model)}-parc.safetensors")
        started = time.perf_counter()
        try:
            result = convert(
                job.model,
                output=str(output),
                force=force or job.force,
                seed=job.seed,
                stages=job.stages,
                rules=_resolve(base, job.rules) if job.rules and _is_path(job.rules) else job.rules,
                input_size=job.size(),
                model_args=job.model_args,
                weights=str(_resolve(base, job.weights)) if job.weights else None,
                strict=job.strict,
            )
        except ParcSurgeryError as err:
            results.append(
                JobResult(
                    name,
                    job.model,
                    False,
                    err.exit_code,
                    err.message,
                    seconds=time.perf_counter() - started,
                )
            )
            continue
        except Exception as err:  # a bug in one job must not stop the others
            results.append(
                JobResult(
                    name,
                    job.model,
                    False,
                    1,
                    f"internal error: {err!r}",
                    seconds=time.perf_counter() - started,
                )
            )
            continue
        plan = result.plan
        results.append(
            JobResult(
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
        )
    return results


def _is_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or "/" in value


def _resolve(base: Path, value: str) -> str:
    candidate = Path(value)
    return str(candidate if candidate.is_absolute() else base / candidate)

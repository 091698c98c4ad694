"""What every command shares: consoles, error handling, option parsing."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from parc_surgery.errors import (
    EXIT_CODES,
    ParcSurgeryError,
    ParcSurgeryWarning,
    UsageError,
    out_of_memory,
    printable,
)

__all__ = [
    "EXIT_CODE_HELP",
    "Output",
    "handle_errors",
    "parse_model_args",
    "parse_size",
    "parse_stages",
    "set_threads",
    "warn_other_size",
]

F = TypeVar("F", bound=Callable[..., Any])

# "\b" keeps click from re-wrapping the lines of the paragraph that follows it.
EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code}  {text}" for code, text in EXIT_CODES.items()
)


def set_threads(threads: int | None) -> None:
    """--threads: torch's intra-op thread count for the rest of the command (None: as is)."""
    if threads is not None:
        import torch

        if threads < 1:
            raise UsageError(
                f"--threads must be at least 1, got {threads}",
                hint="leave it out for torch's default",
            )
        torch.set_num_threads(threads)


def warn_other_size(ui: Output, model: str | os.PathLike, input_size: str | None) -> None:
    """Warn when --input-size differs from the size a checkpoint was converted at.

    A model trained at 64 px evaluated at 224 px scores near chance; say so before the run.
    Unreadable checkpoints are left to the command itself, which reports them properly.
    """
    size = parse_size(input_size)
    if size is None or not str(model).endswith(".safetensors") or not os.path.isfile(model):
        return
    from parc_surgery.checkpoint import read_recipe

    try:
        recorded = tuple(read_recipe(model)["plan"]["input_size"])
    except (ParcSurgeryError, KeyError, TypeError):
        return
    if tuple(size) != recorded:
        ui.warn(
            f"--input-size {size[0]}x{size[1]} differs from the {recorded[0]}x{recorded[1]} "
            f"{os.path.basename(model)} was converted at; its accuracy at another size can "
            "be far lower (drop --input-size to use the recorded one)"
        )


class Output:
    """stdout for the requested result (table, diff, json); stderr for everything else.

    Colour and progress only on a terminal; NO_COLOR is honoured (by rich); --quiet
    keeps only errors and explicitly requested JSON.
    """

    def __init__(self, *, quiet: bool = False, fmt: str = "table"):
        self.quiet = quiet
        self.fmt = fmt
        no_color = bool(os.environ.get("NO_COLOR"))
        self.out = Console(file=sys.stdout, no_color=no_color, soft_wrap=False)
        self.err = Console(file=sys.stderr, no_color=no_color, stderr=True)
        if not self.out.is_terminal:
            # Files and pipes: no colour, and no padding at the ends of the lines (a
            # table's title and caption are centred over it by rich).
            self.out = Console(
                file=_StrippedLines(sys.stdout), no_color=True, width=200, color_system=None
            )
        if not self.err.is_terminal:
            self.err = Console(file=sys.stderr, no_color=True, width=200, color_system=None)

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"warning: {message}", style="yellow", highlight=False, soft_wrap=True)

    def json(self, text: str) -> None:
        """`text` on stdout; a failing stdout (full disk, closed pipe) is exit 7 naming it."""
        try:
            sys.stdout.write(text.rstrip("\n") + "\n")
            sys.stdout.flush()
        except OSError as err:
            from parc_surgery.files import os_error

            error = os_error(_stdout_name(), err, doing="write the JSON to")
            _drop_stdout()
            raise error from None

    def steps(self, total_label: str):
        """A step callback: a live status line on a terminal, nothing otherwise."""
        if not self.interactive:
            return _NullSteps()
        return _LiveSteps(self.err, total_label)


class _StrippedLines:
    """A text stream writing each complete line to `file` without its trailing spaces."""

    def __init__(self, file):
        self.file = file
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self._put("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        text, self.pending = self.pending, ""
        self._put(text)

    def _put(self, text: str) -> None:
        """Write and flush: a stdout that cannot take it (full disk, no permission) is exit 7
        naming it, as for JSON, instead of a traceback (or exit 120 at the final flush). A
        reader that stopped reading (`| head`) drops the rest of the table quietly."""
        try:
            if text:
                self.file.write(text)
            self.file.flush()
        except BrokenPipeError:
            _drop_stdout()
        except OSError as err:
            from parc_surgery.files import os_error

            error = os_error(_stdout_name(), err, doing="write the output to")
            _drop_stdout()
            raise error from None

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):  # fileno, encoding, ...: the stream's own
        return getattr(self.file, name)


def _stdout_name() -> str:
    """Where stdout goes: its file (/proc/self/fd on Linux), else '<stdout>'."""
    try:
        return os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}")
    except (OSError, ValueError, AttributeError):
        return "<stdout>"


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what could not be
    written does not fail again (a second message and exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class _NullSteps:
    def __enter__(self):
        return lambda step: None

    def __exit__(self, *exc):
        return False


class _LiveSteps:
    def __init__(self, console: Console, label: str):
        self.console = console
        self.label = label
        self.status = None

    def __enter__(self):
        self.status = self.console.status(f"{self.label}: starting")
        self.status.__enter__()
        return self.update

    def update(self, step: str) -> None:
        self.status.update(f"{self.label}: {step}")

    def __exit__(self, *exc):
        self.status.__exit__(*exc)
        return False


def print_error(err: ParcSurgeryError) -> None:
    # Messages name untrusted things (file names, job names): their control bytes are escaped.
    message = printable(err.message, keep="\n")
    _stderr().print(f"error: {message}", style=None if _plain() else "red", markup=False)


def _plain() -> bool:
    return bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()


def _stderr() -> Console:
    return Console(file=sys.stderr, no_color=_plain(), highlight=False, soft_wrap=True)


def _show_warning(quiet: bool, default: Callable[..., None]) -> Callable[..., None]:
    """warnings.showwarning that prints ParcSurgeryWarnings as 'warning: ...' lines."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, ParcSurgeryWarning):
            default(message, category, filename, lineno, file, line)
        elif not quiet:
            style = None if _plain() else "yellow"
            shown = printable(message, keep="\n")
            _stderr().print(f"warning: {shown}", style=style, markup=False)

    return show


def _names_an_output(parameter: str) -> bool:
    """Whether a command's parameter names what it writes (out, output*, export*, *_dir);
    every other Path argument is an input. A new output option must be named this way."""
    return (
        parameter == "out"
        or parameter.startswith(("output", "export"))
        or (parameter.endswith("_dir"))
    )


def _input_paths(kwargs: dict[str, Any]) -> list[Path]:
    """The Path arguments of a command that it reads (see _names_an_output)."""
    found: list[Path] = []
    for name, value in kwargs.items():
        if _names_an_output(name):
            continue
        values = value if isinstance(value, list | tuple) else [value]
        found.extend(item for item in values if isinstance(item, Path))
    return found


def handle_errors(func: F) -> F:
    """Turn ParcSurgeryError into its message and exit code, without a traceback.

    ParcSurgeryWarnings raised by the library print as 'warning: ...' on stderr (not
    with --quiet); Ctrl-C exits 130. The command runs inside files.command_inputs: no
    output may be one of its Path arguments or a file it reads, even with --force.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from parc_surgery.files import command_inputs

        with warnings.catch_warnings(), command_inputs(_input_paths(kwargs)):
            warnings.simplefilter("always", ParcSurgeryWarning)
            warnings.showwarning = _show_warning(bool(kwargs.get("quiet")), warnings.showwarning)
            try:
                return func(*args, **kwargs)
            except ParcSurgeryError as err:
                print_error(err)
                raise typer.Exit(err.exit_code) from None
            except (MemoryError, RuntimeError) as err:
                refusal = out_of_memory(err)  # huge --input-size / --batch-size: exit 2
                if refusal is None:
                    raise
                print_error(refusal)
                raise typer.Exit(refusal.exit_code) from None
            except KeyboardInterrupt:
                # Temporary files are already gone (files.atomic_output); say so, exit 130.
                _stderr().print("interrupted: nothing was written", markup=False)
                raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_stages(text: str | None) -> list[int] | None:
    """'3,4' -> [3, 4]."""
    if text is None or not text.strip():
        return None
    try:
        stages = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(
            f"--stages {text!r} is not a comma-separated list of stage numbers",
            hint="write e.g. --stages 3,4 (stage k has output stride 2^(k+1))",
        ) from None
    if not stages or any(s < 1 for s in stages):
        raise UsageError(f"--stages {text!r}: stages are numbered from 1", hint="e.g. --stages 3,4")
    return stages


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'224' -> (224, 224); '224x288' -> (224, 288)."""
    if text is None:
        return None
    from parc_surgery.graph import parse_input_size

    return parse_input_size(text)


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """['dims=[48,96]', 'drop_rate=0.1'] -> {'dims': [48, 96], 'drop_rate': 0.1}.

    VALUE is read by the one safe YAML loader; the result passes the model-argument
    policy (model_args.check_model_args): no keyword that loads files or reaches the network.
    """
    from parc_surgery.model_args import check_model_args
    from parc_surgery.rules.yaml_source import parse_yaml

    args: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(
                f"--model-arg {item!r} is not KEY=VALUE",
                hint="write e.g. --model-arg dims=[48,96,192,384] (VALUE is parsed as YAML)",
            )
        try:
            parsed, _ = parse_yaml(value, f"--model-arg {key.strip()}")
        except ParcSurgeryError as err:
            raise UsageError(
                f"--model-arg {item!r}: VALUE is not valid YAML ({err.what})"
            ) from None
        args[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return check_model_args(args, where="--model-arg")


def conversion_kwargs(
    *,
    stages: str | None,
    rules: str | None,
    input_size: str | None,
    model_arg: list[str] | None,
    weights: Any = None,
) -> dict[str, Any]:
    """The options every converting command shares, parsed for plan_conversion()."""
    return {
        "stages": parse_stages(stages),
        "rules": rules,
        "input_size": parse_size(input_size),
        "model_args": parse_model_args(model_arg),
        "weights": str(weights) if weights else None,
    }

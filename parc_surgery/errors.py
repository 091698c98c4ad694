"""Errors a user can cause, each with the exit code the CLI returns for it.

A ParcSurgeryError's message is one paragraph: what was wrong, where, and what to do.
The CLI prints it without a traceback. Anything that is not a ParcSurgeryError is a
bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import unicodedata

__all__ = [
    "EXIT_CODES",
    "BatchError",
    "CheckpointError",
    "DataError",
    "DivergedError",
    "ExportError",
    "Interrupted",
    "NothingMatchedError",
    "OutputError",
    "ParcSurgeryError",
    "ParcSurgeryWarning",
    "RulesError",
    "TraceError",
    "UsageError",
    "VerificationError",
    "WeightsError",
    "out_of_memory",
    "printable",
]

# Bidirectional overrides and isolates reorder what a terminal shows ("Trojan source").
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object, *, keep: str = "") -> str:
    """`text` safe for a terminal: every control character (ESC, CR, BEL, C1, DEL, bidi
    overrides) but those in `keep` written as its escape (ESC as \\x1b). For names from
    untrusted input (job names, file names) before they are printed."""
    text = str(text)
    if text.isprintable() and not _BIDI.intersection(text):
        return text
    return "".join(
        char
        if char in keep or (unicodedata.category(char) != "Cc" and char not in _BIDI)
        else (repr(char)[1:-1] if char != "\\" else char)
        for char in text
    )


class ParcSurgeryError(Exception):
    """Base of every error a user can cause."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        # `what` often starts with a name (a model, a path), so only the hint is capitalised.
        parts = [_closed(self.what)]
        if self.where:
            parts.insert(0, f"{self.where}:")
        if self.hint:
            hint = self.hint.strip()
            parts.append(_closed(hint[:1].upper() + hint[1:]))
        return " ".join(parts)


def _closed(text: str) -> str:
    """`text` ending in exactly one closing punctuation mark."""
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."


class ParcSurgeryWarning(UserWarning):
    """Something a user should know that does not stop the command (printed as 'warning:')."""


class UsageError(ParcSurgeryError):
    """A bad argument: unknown model, stage the model lacks, bad input size."""

    exit_code = 2


class RulesError(UsageError):
    """A rules file that is missing, does not parse, or does not validate."""

    exit_code = 2


class NothingMatchedError(ParcSurgeryError):
    """Nothing to swap (without allow_empty), or a rule matched nothing with --strict."""

    exit_code = 3


class TraceError(ParcSurgeryError):
    """The model could not be traced or shape-propagated."""

    exit_code = 4


class VerificationError(ParcSurgeryError):
    """The converted model's shapes differ from the original's, or its outputs are not finite."""

    exit_code = 5


class CheckpointError(ParcSurgeryError):
    """A checkpoint that is corrupt, truncated, foreign, or does not match its recipe."""

    exit_code = 6


class WeightsError(CheckpointError):
    """Source weights (--weights / --pretrained) that cannot be loaded."""

    exit_code = 6


class OutputError(ParcSurgeryError):
    """An output path that exists (without --force), may not or cannot be written."""

    exit_code = 7


class BatchError(ParcSurgeryError):
    """One or more jobs of a batch failed."""

    exit_code = 8


class ExportError(ParcSurgeryError):
    """ONNX export failed or its onnxruntime check disagreed with PyTorch."""

    exit_code = 9


class DataError(ParcSurgeryError):
    """A data set that cannot be used: missing folder or split, no images, a class count
    that differs from the model's head, an unreadable image."""

    exit_code = 10


class DivergedError(ParcSurgeryError):
    """Training produced a non-finite loss or weight (NaN, inf): stopped, nothing saved."""

    exit_code = 11


class Interrupted(ParcSurgeryError):
    """Ctrl-C (SIGINT) or SIGTERM stopped a run; finetune saved its state if asked to."""

    exit_code = 130


_TRIED = re.compile(r"(?:tried to allocate|Tried to allocate)\s+([\d.]+)\s*(bytes|[KMGT]i?B)?")
_UNITS = {None: 1, "bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def out_of_memory(err: BaseException) -> UsageError | None:
    """A UsageError (exit 2) for an allocation that failed (CPU or CUDA), else None.

    Activation memory grows with batch size x height x width, so the message says by how
    much to shrink them: the failed allocation over the memory free now bounds the factor.
    """
    text = str(err)
    if not (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or (isinstance(err, RuntimeError) and "can't allocate memory" in text)
    ):
        return None
    found = _TRIED.search(text)
    wanted = float(found[1]) * _UNITS.get(found[2], 1) if found else None
    free = _free_bytes()
    detail = f"an allocation of {wanted / 2**30:.1f} GiB failed" if wanted else "memory ran out"
    advice = "lower --input-size or --batch-size"
    if wanted and free and wanted > free:
        share = free / wanted
        advice += (
            f": batch x height x width must shrink to at most about {share:.0%} of now "
            f"(e.g. each side x {share**0.5:.2f}); {free / 2**30:.1f} GiB is free"
        )
    return UsageError(f"out of memory: {detail}", hint=advice)


def _free_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: please report it with the traceback)",
    2: "usage or rules error (bad argument, unknown model, bad YAML, unknown stage)",
    3: "nothing to swap (without --allow-empty), or a rule matched nothing with --strict",
    4: "the model could not be traced or shape-propagated",
    5: "verification failed: converted shapes differ, or --verify found non-finite outputs",
    6: "checkpoint or weights file is corrupt, truncated, foreign, edited or mismatched",
    7: "output path exists (use --force) or cannot be written",
    8: "one or more batch jobs failed",
    9: "ONNX export failed or did not match PyTorch",
    10: "data error: missing folder or split, no images, wrong class count, unreadable image",
    11: "training diverged: a non-finite loss or weight; the last finite state is kept",
    130: "interrupted by Ctrl-C (SIGINT): batch prints the summary of the jobs done so far, "
    "finetune saves its state if --checkpoint-dir was given",
    143: "stopped by SIGTERM; finetune saved its state if --checkpoint-dir was given",
}

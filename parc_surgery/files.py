"""Every file parc-surgery writes goes through here: the checks, the temporary file, the commit.

`check_output` reads the file system and writes nothing: it refuses (OutputError, exit 7) a
path that ends in '/', a directory, anything that is not a regular file (a device, FIFO or
socket: even with force), one of the command's own input files (even with force: the
`inputs` given, and every file noted inside the running `command_inputs` scope, which
the CLI opens around each command with its Path arguments and which the readers of
checkpoints and weights add to), an existing file without force, a missing or
unwritable directory and a name too long for the file system. It returns the path that
will be written, symlinks resolved.

`atomic_output` yields a temporary path beside the target for a writer that takes a path
(safetensors, ONNX, matplotlib, torch.save) and commits it only when the writer returns:
without force by `link()`, which fails if the target appeared meanwhile (two runs racing for
one name: one wins, the other exits 7 and nothing is lost), with force by `rename()`. The
temporary file is removed on every failure path, KeyboardInterrupt included; one left by a
killed run (kill -9) is recognisable by its name, `.<name>.<host>-<pid>-<token>.parc-tmp`,
and the next write into that folder removes it when its process is gone (same host) or
reports it (another host, or an older parc-surgery's `.<name>.*.tmp`). `write_bytes` writes
bytes through the same path with `os.write`. Every OSError becomes an OutputError naming the
path and the reason (full disk, name too long, permission denied, read-only file system...).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from parc_surgery.errors import OutputError, ParcSurgeryWarning

__all__ = [
    "TEMP_SUFFIX",
    "atomic_output",
    "check_output",
    "command_inputs",
    "note_inputs",
    "stale_temporaries",
    "write_bytes",
]

TEMP_SUFFIX = ".parc-tmp"
_KEPT_NAME = 64  # characters of the target's name kept in its temporary file's name
_TEMP_NAME = re.compile(
    r"^\.(?P<name>.*)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}"
    + re.escape(TEMP_SUFFIX)
    + "$"
)
_REPORT_AFTER_S = 3600.0  # a foreign temporary file this old is probably from a killed run

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is exhausted: free some space or write somewhere else",
    errno.ENAMETOOLONG: "choose a shorter file name",
    errno.EACCES: "check the permissions of the file and its folder, or write somewhere else",
    errno.EPERM: "check the permissions of the file and its folder, or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EISDIR: "give a file path, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
}


def os_error(path: str | os.PathLike, err: OSError, *, doing: str = "write") -> OutputError:
    """The OutputError (exit 7) for an OSError met while writing `path`."""
    name = errno.errorcode.get(err.errno or 0, "")
    reason = err.strerror or str(err)
    return OutputError(
        f"cannot {doing} {os.fspath(path)}: {reason}" + (f" ({name})" if name else ""),
        hint=_HINTS.get(err.errno or 0, "check the path and try again"),
    )


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _refuse_non_regular(shown: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{shown} is a directory", hint="give a file path (inside it, perhaps)")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(
            f"{shown} is {_kind(st.st_mode)}: parc-surgery writes only regular files and never "
            "replaces anything else, even with --force",
            hint="choose another output path",
        )


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ENOTDIR:
            return None  # reported below as a missing folder
        raise os_error(path, err) from None


# The files the running command reads (see command_inputs): no write may replace one of them.
_COMMAND_INPUTS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "parc_surgery_command_inputs", default=None
)


@contextlib.contextmanager
def command_inputs(paths: Iterable[str | os.PathLike | None] = ()) -> Iterator[set[str]]:
    """A scope (one CLI command) whose inputs no output may be: `paths`, and every file the
    library reads inside it (note_inputs). check_output and atomic_output refuse them all,
    even with force."""
    token = _COMMAND_INPUTS.set(set())
    try:
        note_inputs(*paths)
        yield _COMMAND_INPUTS.get()  # type: ignore[misc]
    finally:
        _COMMAND_INPUTS.reset(token)


def note_inputs(*paths: str | os.PathLike | None) -> None:
    """Record files the running command reads (a no-op outside command_inputs)."""
    noted = _COMMAND_INPUTS.get()
    if noted is None:
        return
    for path in paths:
        if path is not None and os.path.isfile(path):
            noted.add(os.path.realpath(path))


def _check_not_input(shown: str, target: Path, inputs: Iterable[str | os.PathLike]) -> None:
    for item in [*inputs, *sorted(_COMMAND_INPUTS.get() or ())]:
        if item is None:
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(item, target):
                raise OutputError(
                    f"{shown} is the input file {os.fspath(item)}: writing it would destroy "
                    "the input, so it is refused even with --force",
                    hint="choose another output path",
                )


def _check_folder(shown: str, target: Path) -> None:
    folder = target.parent
    st = _stat(folder)
    if st is None:
        raise OutputError(
            f"cannot write {shown}: folder {folder} does not exist",
            hint="create it first or choose another output path",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {shown}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write {shown}: folder {folder} is not writable",
            hint="check its permissions or choose another output path",
        )
    with contextlib.suppress(OSError, ValueError, AttributeError):
        limit = os.pathconf(folder, "PC_NAME_MAX")
        if limit > 0 and len(os.fsencode(target.name)) > limit:
            raise os_error(target, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)))


def check_output(
    path: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """The file `path` names (symlinks resolved), or OutputError (exit 7) if it may not be written.

    `inputs` are the files the command reads: none of them is ever overwritten.
    """
    shown = os.fspath(path)
    if not shown:
        raise OutputError("the output path is empty", hint="give a file path")
    if shown.endswith("/") or (os.sep != "/" and shown.endswith(os.sep)):
        raise OutputError(
            f"{shown} ends with '/', so it names a directory, not a file",
            hint=f"give a file path, e.g. {shown}model.safetensors",
        )
    target = Path(os.path.realpath(shown))
    st = _stat(target)
    if st is not None:
        _refuse_non_regular(shown, st)
        _check_not_input(shown, target, inputs)
        if not force:
            raise OutputError(
                f"{shown} already exists",
                hint="pass --force to overwrite it, or choose another path",
            )
    _check_folder(shown, target)
    return target


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temporary_name(target: Path) -> str:
    name = target.name[:_KEPT_NAME]
    return f".{name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def stale_temporaries(target: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(removable, foreign): temporary files killed runs left in the folder of `target`.

    Removable: ours, from this host, whose process is gone. Foreign: ours from another host,
    or an older parc-surgery's `.<target name>.*.tmp`, older than an hour; only reported.
    """
    removable, foreign = [], []
    host = _host_tag()
    now = time.time()
    target = Path(target)
    old_prefix = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return [], []
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        found = _TEMP_NAME.match(entry.name)
        if found and found["host"] == host:
            if not _alive(int(found["pid"])):
                removable.append(Path(entry.path))
            continue
        if found or (entry.name.startswith(old_prefix) and entry.name.endswith(".tmp")):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > (
                    _REPORT_AFTER_S
                ):
                    foreign.append(Path(entry.path))
    return removable, foreign


def _tidy(target: Path) -> None:
    folder = target.parent
    removable, foreign = stale_temporaries(target)
    removed = []
    for path in removable:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    if removed:
        warnings.warn(
            f"removed {len(removed)} temporary file(s) left in {folder} by killed "
            f"parc-surgery runs: {', '.join(removed[:3])}",
            ParcSurgeryWarning,
            stacklevel=3,
        )
    if foreign:
        warnings.warn(
            f"{len(foreign)} old temporary file(s) in {folder} may be left by killed runs "
            f"({', '.join(p.name for p in foreign[:3])}); remove them if no run is writing there",
            ParcSurgeryWarning,
            stacklevel=3,
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str | os.PathLike, *, folder: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        if folder:
            return  # some file systems cannot open a folder; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError as err:
        if not folder or err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _claim(tmp: str, target: Path) -> None:
    """Put `tmp` at `target` only if nothing is there: link(), or O_EXCL where links fail."""
    taken = OutputError(
        f"{target} already exists: another process wrote it while this one ran",
        hint="pass --force to overwrite it, or choose another path",
    )
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise taken from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        try:  # a file system without hard links: claim the name first, then fill it
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise taken from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _commit(tmp: str, target: Path, *, force: bool) -> None:
    _fsync(tmp)
    # After the writer: a temporary file's 0600 (which some writers recreate the file with)
    # would surprise the user; give the file the mode an ordinary open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    if force:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None:  # it may have changed since check_output
            _refuse_non_regular(str(target), st)
        os.replace(tmp, target)
    else:
        _claim(tmp, target)
    _fsync(target.parent, folder=True)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Iterator[str]:
    """Yield a temporary path beside `path`; commit it to `path` only if the block succeeds.

    The checks of `check_output` run first. An OSError in the block or the commit becomes an
    OutputError (exit 7) naming the path; any failure removes the temporary file.
    """
    target = check_output(path, force=force, inputs=inputs)
    _tidy(target)
    tmp = str(target.parent / _temporary_name(target))
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise os_error(target, err) from None
    committed = False
    try:
        yield tmp
        _commit(tmp, target, force=force)
        committed = True
    except OSError as err:
        raise os_error(path, err) from None
    finally:
        if not committed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_bytes(
    path: str | os.PathLike,
    data: bytes | bytearray | memoryview,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Write `data` to `path` atomically (see atomic_output); returns the file written."""
    view = memoryview(data).cast("B")
    with atomic_output(path, force=force, inputs=inputs) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written : written + (1 << 24)])
        finally:
            os.close(fd)
    return Path(os.path.realpath(os.fspath(path)))

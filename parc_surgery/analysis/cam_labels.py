"""Class names and true labels for `cam`: from an ImageFolder layout or a --class-names file.

An image at DIR/<class>/img.png whose sibling folders are the data set's classes (the
layout `eval` and `finetune` read, e.g. DIR/val/<class>/img.png) has a true label: its
folder. The class list is numbered as timm's ImageFolder reader numbers it (what
train/data.py trains with): the folders of DIR that directly hold an image, in timm's
natural sort order. It is used only when it has as many classes as the model's head
predicts and every image's folder agrees on it; otherwise classes stay bare indices.
A --class-names file (one name per line) names the classes explicitly instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from parc_surgery.errors import UsageError, printable

__all__ = [
    "MAX_CLASS_FOLDERS",
    "MAX_NAMES_BYTES",
    "add_labels",
    "folder_classes",
    "image_classes",
    "read_class_names",
    "shown_name",
]

MAX_CLASS_FOLDERS = 100_000  # more sibling folders than this: not a class list
MAX_NAMES_BYTES = 4 * 1024 * 1024  # a --class-names file larger than this is refused
_NAME_CHARS = 40  # a name longer than this is cut in the figure and the table


def _image_extensions() -> set[str]:
    from timm.data.readers.img_extensions import get_img_extensions

    return set(get_img_extensions(as_set=True))


def _holds_image(folder: str, extensions: set[str]) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(
                os.path.splitext(entry.name)[1].lower() in extensions and entry.is_file()
                for entry in entries
            )
    except OSError:
        return False


def folder_classes(image: str | os.PathLike) -> list[str] | None:
    """The class list of the ImageFolder split holding `image` (None if there is none).

    The folders beside the image's own folder that directly hold an image file, sorted
    with timm's natural_key (how timm numbers ImageFolder classes).
    """
    from timm.utils.misc import natural_key

    own = Path(image).absolute().parent
    root = own.parent
    if own == root:
        return None
    extensions = _image_extensions()
    names = []
    try:
        with os.scandir(root) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_CLASS_FOLDERS:
                    return None
                if entry.is_dir() and _holds_image(entry.path, extensions):
                    names.append(entry.name)
    except OSError:
        return None
    if own.name not in names:
        return None
    return sorted(names, key=natural_key)


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The class names in a text file, one a line (blank lines skipped): a UsageError if bad."""
    where = Path(path)
    if where.exists() and not where.is_file():  # a folder, or a FIFO that would block
        raise UsageError(
            f"--class-names {printable(where)} is not a regular file",
            hint="name a text file with one class name a line",
        )
    try:
        with open(where, "rb") as handle:
            data = handle.read(MAX_NAMES_BYTES + 1)
    except OSError as err:
        raise UsageError(
            f"--class-names {printable(where)} cannot be read ({err.strerror or err})",
            hint="name a text file with one class name a line",
        ) from None
    if len(data) > MAX_NAMES_BYTES:
        raise UsageError(
            f"--class-names {printable(where)} is larger than {MAX_NAMES_BYTES} bytes",
            hint="give one class name a line, as many lines as the model has classes",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(
            f"--class-names {printable(where)} is not UTF-8 text",
            hint="give one class name a line",
        ) from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UsageError(f"--class-names {printable(where)} holds no names")
    return names


def image_classes(paths: Sequence[str | os.PathLike], num_classes: int | None) -> list[str] | None:
    """The ImageFolder class list every image's folder agrees on, if it fits the head."""
    lists = {tuple(found) for found in map(folder_classes, paths) if found is not None}
    if len(lists) != 1:
        return None
    (names,) = lists
    return list(names) if num_classes is None or len(names) == num_classes else None


def shown_name(name: str | None) -> str:
    """A class name safe to print or draw: control characters escaped, cut to 40 chars."""
    if name is None:
        return ""
    text = printable(name)
    return text if len(text) <= _NAME_CHARS else text[: _NAME_CHARS - 1] + "…"


def add_labels(result: dict, paths: Sequence[str | os.PathLike], names: list[str] | None) -> None:
    """Give each image `true_class` / `true_name`, each model `predicted_name`, `explained_name`.

    The true class is the image's folder name's index in `names`; null where unknown.
    """
    index = {name: i for i, name in enumerate(names or [])}
    for path, entry in zip(paths, result["images"], strict=True):
        true = index.get(Path(path).absolute().parent.name) if names else None
        entry["true_class"] = true
        entry["true_name"] = None if true is None else names[true]
        for key in ("original", "converted"):
            model = entry[key]
            for field in ("predicted", "explained"):
                cls = model[f"{field}_class"]
                known = names is not None and 0 <= cls < len(names)
                model[f"{field}_name"] = names[cls] if known else None

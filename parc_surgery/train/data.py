"""Data for fine-tuning and evaluation, through timm's own pipeline.

Datasets come from `timm.data.create_dataset` (a folder tree in ImageFolder layout, a tar
file, or any source timm reads by name), transforms from `resolve_data_config` (the
model's pretrained_cfg: mean, std, interpolation, crop) and `create_transform`. What is
ours: the checks that turn a bad data set into a DataError naming the path, and the
samplers that make the data order a function of (seed, epoch) on any number of processes.
"""

from __future__ import annotations

import math
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from parc_surgery.errors import DataError, UsageError

__all__ = [
    "DataConfig",
    "EpochSampler",
    "HeldOut",
    "ImageSet",
    "ShardSampler",
    "UnreadableImage",
    "check_tree",
    "batches",
    "describe_preprocessing",
    "eval_loader",
    "head_classes",
    "holdout_indices",
    "open_split",
    "preprocessing",
    "train_loader",
    "transform_for",
]


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are read; the CLI's data options, parsed."""

    root: Path
    dataset: str = ""  # timm create_dataset name; "" reads a folder tree or a tar file
    train_split: str = "train"
    val_split: str = "val"
    input_size: tuple[int, int] | None = None  # None: the model's (a checkpoint's plan size)
    batch_size: int = 64  # per process
    workers: int = 2
    augment: bool = True  # timm's train transform; False: the eval transform for training too
    scale: float = 0.08  # RandomResizedCrop's smallest area share
    hflip: float = 0.5
    allow_outside: bool = False  # follow symlinks that leave `root`
    # Share of the training images held out (eval transform, never trained on) to pick
    # the best epoch; 0 keeps the last epoch. The reported split is never read to choose.
    holdout: float = 0.1
    crop_pct: float | None = None  # None: the model's pretrained_cfg crop_pct (timm's eval)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "dataset": self.dataset or "folder",
            "train_split": self.train_split,
            "val_split": self.val_split,
            "input_size": list(self.input_size) if self.input_size else None,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "augment": self.augment,
            "scale": self.scale,
            "hflip": self.hflip,
            "holdout": self.holdout,
            "crop_pct": self.crop_pct,
        }


def head_classes(model: nn.Module) -> int | None:
    """How many classes the model's classifier predicts (timm's `num_classes`)."""
    count = getattr(model, "num_classes", None)
    return int(count) if isinstance(count, int) and count > 0 else None


class ImageSet(Dataset):
    """A timm dataset whose unreadable images raise DataError naming the file.

    timm's ImageDataset skips an image it cannot decode (with a log line) and trains on
    the next one; a recovery run should stop instead, so folder and tar sets are decoded
    here from timm's reader. Other sources (torch/, hfds/, ...) are used as timm gives them.
    """

    def __init__(self, dataset: Any, where: str, transform=None):
        self.dataset = dataset
        self.where = where
        reader = getattr(dataset, "reader", None)
        self._reader = reader if hasattr(reader, "samples") or _is_tar(reader) else None
        self.set_transform(transform)

    @property
    def class_to_idx(self) -> dict[str, int] | None:
        """Class folder name -> label (folder and tar sets; None for other sources)."""
        mapping = getattr(self._reader, "class_to_idx", None) or getattr(
            self._reader, "class_name_to_idx", None
        )
        return dict(mapping) if mapping else None

    def set_transform(self, transform) -> ImageSet:
        """Use `transform` on every image from now on; returns self."""
        self.transform = transform
        if self._reader is None:
            self.dataset.transform = transform
        return self

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self._reader is None:
            return self.dataset[index]
        from parc_surgery.analysis.images import open_bounded

        try:
            handle, target = self._reader[index][:2]
            with handle, open_bounded(handle) as image:
                picture = image.convert(getattr(self.dataset, "input_img_mode", None) or "RGB")
        except (OSError, ValueError, SyntaxError, tarfile.TarError) as err:  # decode errors
            name = self.dataset.filename(index, absolute=True)
            raise UnreadableImage(
                f"{name}: not a readable image ({type(err).__name__}: {err})"
            ) from None
        if self.transform is not None:
            picture = self.transform(picture)
        return picture, -1 if target is None else target


def _is_tar(reader: Any) -> bool:
    return type(reader).__name__ == "ReaderImageInTar"


def _split_source(config: DataConfig, split: str) -> Path:
    root = Path(config.root)
    if not root.exists():
        raise DataError(
            f"data folder {root} does not exist",
            hint=f"point --data at a folder holding {config.train_split}/ and "
            f"{config.val_split}/ (class folders of images inside each)",
        )
    if not root.is_dir():
        raise DataError(
            f"--data {root} is a file, not a folder",
            hint=f"point --data at the folder holding {config.train_split}/ and "
            f"{config.val_split}/ (or {config.train_split}.tar and {config.val_split}.tar)",
        )
    for candidate in (root / split, root / f"{split}.tar"):
        if candidate.exists():
            check_tree(candidate, root, allow_outside=config.allow_outside)
            return candidate
    present = sorted(p.name for p in root.iterdir())
    raise DataError(
        f"split {split!r} not found: neither {root / split} nor {root / split}.tar exists "
        f"(found: {', '.join(present[:8]) or 'nothing'})",
        hint="create it, or name the split with --train-split / --val-split",
    )


def _refuse(path: Path, why: str, hint: str) -> None:
    raise DataError(f"{path}: {why}", hint=hint)


def check_tree(top: Path, root: Path, *, allow_outside: bool = False) -> None:
    """Refuse (DataError) what must not be read under `top`, before anything is opened.

    timm walks a folder following symlinks and opens every image name it finds, so a FIFO
    would block forever and a symlink to an ancestor folder would loop forever. Every
    entry must be a regular file or a folder, no folder may be reached twice (a cycle, or
    the same tree twice), and a symlink must stay inside `root` unless `allow_outside`.
    """
    base = os.path.realpath(root)
    outside_hint = "copy the files into the data folder, or pass --allow-outside to follow links"
    seen: set[tuple[int, int]] = set()
    pending = [Path(top)]
    while pending:
        path = pending.pop()
        try:
            info = path.stat()
        except OSError as err:  # a dangling link, a link loop (ELOOP), no permission
            _refuse(path, f"cannot be read ({err.strerror or err})", "remove or fix it")
        if path.is_symlink() and not allow_outside:
            real = os.path.realpath(path)
            if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
                _refuse(path, f"is a symlink to {real}, outside {root}", outside_hint)
        if stat.S_ISREG(info.st_mode):
            continue
        if not stat.S_ISDIR(info.st_mode):
            _refuse(
                path,
                "is not a regular file or folder (a FIFO, socket or device would block or "
                "never end when read)",
                "remove it from the data folder",
            )
        key = (info.st_dev, info.st_ino)
        if key in seen:
            _refuse(
                path,
                "reaches a folder already listed (a symlink cycle, or the same folder twice)",
                "remove the symlink",
            )
        seen.add(key)
        try:
            pending.extend(sorted(Path(entry.path) for entry in os.scandir(path)))
        except OSError as err:
            _refuse(path, f"cannot be listed ({err.strerror or err})", "fix its permissions")


def open_split(
    config: DataConfig,
    split: str,
    *,
    num_classes: int | None,
    reference: dict[str, int] | None = None,
) -> ImageSet:
    """timm's dataset for one split, checked: it exists, holds images, matches the head.

    `reference` (the train split's class -> label map) makes a val split that lacks some
    class folders label the others as training did; a class training never saw is an error.
    """
    if config.dataset:
        where = f"{config.dataset}:{split} under {config.root}"
        kwargs = {"root": str(config.root), "split": split, "search_split": True}
    else:
        source = _split_source(config, split)
        where = str(source)
        kwargs = {"root": str(source), "split": split, "search_split": False}
        if source.is_file():  # a .tar: never read (or write) timm's pickled tar info cache
            kwargs["cache_tarinfo"] = False
    images = _create(config.dataset, where, kwargs)
    classes = images.class_to_idx
    if classes is None:
        return images
    if reference is not None:
        unknown = sorted(set(classes) - set(reference))
        if unknown:
            raise DataError(
                f"{where} has class folders the training split lacks: {', '.join(unknown[:8])}",
                hint="both splits need the same class folder names",
            )
        if classes != {name: reference[name] for name in classes}:
            images = _create(config.dataset, where, {**kwargs, "class_map": reference})
    elif num_classes is not None and len(classes) != num_classes:
        raise DataError(
            f"{where} has {len(classes)} class folders but the model's head predicts "
            f"{num_classes} classes",
            hint=f"convert the model with --model-arg num_classes={len(classes)} (or point "
            "--data at the data set the model was made for)",
        )
    return images


def _create(name: str, where: str, kwargs: dict[str, Any]) -> ImageSet:
    from timm.data import create_dataset

    try:
        dataset = create_dataset(name, **kwargs)
    except (RuntimeError, OSError, AssertionError, ValueError, tarfile.TarError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"{where}: no usable images ({detail})",
            hint="each split needs one folder per class holding .png/.jpg images",
        ) from None
    images = ImageSet(dataset, where)
    if len(images) == 0:
        raise DataError(f"{where}: the split holds no images", hint="add images or fix --data")
    return images


def preprocessing(model: nn.Module, config: DataConfig, input_size) -> dict[str, Any]:
    """timm's validation preprocessing for `model` at `input_size` (resolve_data_config on
    its pretrained_cfg; `config.crop_pct` replaces the cfg's crop_pct when given)."""
    from timm.data import resolve_data_config

    args: dict[str, Any] = {"input_size": (3, *input_size)}
    if config.crop_pct is not None:
        args["crop_pct"] = config.crop_pct
    data_cfg = resolve_data_config(args=args, model=model)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_cfg.items()}


def describe_preprocessing(cfg: dict[str, Any]) -> str:
    """One line: what an eval transform does to each image."""
    h, w = cfg["input_size"][1:]
    crop = cfg["crop_pct"]
    return (
        f"preprocessing: resize ({cfg['interpolation']}) to {h / crop:.0f} px on the short "
        f"side, {cfg['crop_mode']} crop {h}x{w} (crop_pct {crop:g}), normalise mean "
        f"{tuple(round(x, 3) for x in cfg['mean'])} std {tuple(round(x, 3) for x in cfg['std'])}"
    )


def transform_for(model: nn.Module, config: DataConfig, input_size, *, training: bool):
    """timm's transform with the model's normalisation at `input_size` (H, W)."""
    from timm.data import create_transform

    data_cfg = preprocessing(model, config, input_size)
    data_cfg["input_size"] = tuple(data_cfg["input_size"])
    data_cfg["mean"], data_cfg["std"] = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    if not training:
        return create_transform(**data_cfg, is_training=False)
    return create_transform(
        **data_cfg,
        is_training=True,
        no_aug=not config.augment,
        scale=(config.scale, 1.0),
        hflip=config.hflip,
    )


class HeldOut(Dataset):
    """The images `indices` of an ImageSet (a training subset or the selection holdout)."""

    def __init__(self, images: ImageSet, indices: list[int], where: str):
        self.images, self.indices, self.where = images, list(indices), where

    @property
    def class_to_idx(self) -> dict[str, int] | None:
        return self.images.class_to_idx

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.images[self.indices[index]]


def holdout_indices(count: int, share: float) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): a fixed draw (seed 0, the same for every run
    seed) of round(share * count) images, at least one when share > 0."""
    if not 0 <= share < 1:
        raise UsageError(f"--holdout {share}: give a share of the training images in [0, 1)")
    if share == 0:
        return list(range(count)), []
    held = max(1, round(share * count))
    if held >= count:
        raise DataError(
            f"--holdout {share} of {count} training images leaves none to train on",
            hint="add images or lower --holdout (0 keeps the last epoch instead)",
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0)).tolist()
    return sorted(order[held:]), sorted(order[:held])


class EpochSampler(DistributedSampler):
    """DistributedSampler whose first `skip` indices of an epoch are left out (resume).

    The order depends on (seed, epoch) only; one process uses it with num_replicas=1, so
    step t of one process sees exactly the union of step t's batches of N processes.
    """

    skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ...: every image once over all ranks, no padding."""

    def __init__(self, indices: list[int], rank: int, world: int):
        self.indices = indices[rank::world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _seed_numpy(worker_id: int) -> None:
    # torch seeds `random` and torch in each worker; numpy draws would repeat across workers.
    import numpy as np

    np.random.seed(torch.initial_seed() % 2**32)


def _loader(dataset, batch_size, sampler, workers, *, drop_last, device, generator=None):
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
        worker_init_fn=_seed_numpy if workers else None,
        generator=generator,
    )


def train_loader(images: ImageSet, config: DataConfig, *, rank, world, seed, device) -> DataLoader:
    """Shuffled, full batches only; call `.sampler.set_epoch(e)` and seed `.generator`."""
    sampler = EpochSampler(images, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    steps = len(sampler) // config.batch_size
    if steps == 0:
        raise DataError(
            f"{images.where}: {len(images)} images make no full batch of "
            f"{config.batch_size} x {world} process(es)",
            hint="lower --batch-size or add images",
        )
    generator = torch.Generator().manual_seed(seed)
    return _loader(
        images,
        config.batch_size,
        sampler,
        config.workers,
        drop_last=True,
        device=device,
        generator=generator,
    )


def eval_loader(
    images: ImageSet, config: DataConfig, *, rank, world, device, limit: int | None = None
) -> DataLoader:
    """In order, every image once across ranks; `limit` keeps N images spread evenly."""
    total = len(images)
    if limit is not None and limit < total:
        indices = [math.floor(i * total / limit) for i in range(limit)]
    else:
        indices = list(range(total))
    sampler = ShardSampler(indices, rank, world)
    return _loader(
        images, config.batch_size, sampler, config.workers, drop_last=False, device=device
    )


class UnreadableImage(Exception):
    """An image that does not decode; `batches` turns it into a DataError.

    Not a DataError itself: DataLoader rebuilds a worker's exception from its type and the
    traceback text, which a ParcSurgeryError's constructor does not take.
    """


def batches(loader: DataLoader) -> Iterator:
    """Iterate `loader`; an unreadable image, in this process or a worker, is a DataError."""
    try:
        yield from loader
    except UnreadableImage as err:
        raise DataError(
            _original_message(str(err)),
            hint="replace or delete the file, then run the command again",
        ) from None


def _original_message(text: str) -> str:
    # From a worker, the text is the whole traceback; the message is its last line.
    marker = f"{UnreadableImage.__module__}.{UnreadableImage.__name__}: "
    lines = [line for line in text.splitlines() if line.startswith(marker)]
    return lines[-1][len(marker) :] if lines else text

"""Datasets as uint8 tensors in memory: CIFAR-10, an image folder, digits, synthetic.

Every dataset is returned as a `Dataset` of uint8 [N, 3, H, W] images and int64 labels.
Per-example arrays downstream are keyed by the index into `train_x`, so the order here is
part of the contract: it is fixed and its checksum is the dataset's identity.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

class DataNotFound(UserError):
    """The dataset is not where the run (or the command line) says it is."""


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 [N, 3, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    # Where each training image comes from (not part of the identity): its index in the
    # dataset's whole training split (differs from its position under train_subset), and
    # for an image folder its file, relative to the folder. None: the position itself / no file.
    train_source: np.ndarray | None = None
    train_files: tuple[str, ...] | None = None

    def source_index(self) -> np.ndarray:
        """Int64 [N]: each training image's index in the whole training split."""
        return (np.arange(len(self.train_y), dtype=np.int64) if self.train_source is None
                else np.asarray(self.train_source, dtype=np.int64))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict:
        """Name, sizes and a checksum of pixels and labels: what phase two checks against."""
        return {"name": self.name, "n_train": int(len(self.train_y)),
                "n_test": int(len(self.test_y)), "shape": list(self.train_x.shape[1:]),
                "sha256": self._sha256}

    @functools.cached_property
    def _sha256(self) -> str:  # hashed once per dataset (hundreds of MB for CIFAR-10)
        h = hashlib.sha256()
        for t in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(np.ascontiguousarray(t.numpy()).tobytes())
        return h.hexdigest()


def _to_uint8_nchw(arr: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> contiguous [N, 3, H, W] tensor."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def load_cifar10(root: str | Path, download: bool = True) -> Dataset:
    """CIFAR-10 via torchvision: use the copy under `root`, or download it there."""
    from torchvision.datasets import CIFAR10

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"data root {root} is a file; give the folder that holds (or is to hold) "
                        f"cifar-10-batches-py")
    try:
        train = CIFAR10(str(root), train=True, download=False)
    except RuntimeError:
        if not download:
            raise DataNotFound(_cifar_missing(root, tried=False)) from None
        try:
            train = CIFAR10(str(root), train=True, download=True)
        except Exception:  # no network, proxy errors, partial downloads: one message
            raise DataNotFound(_cifar_missing(root, tried=True)) from None
    test = CIFAR10(str(root), train=False, download=False)
    return Dataset(
        name="cifar10",
        train_x=_to_uint8_nchw(train.data), train_y=torch.tensor(train.targets, dtype=torch.int64),
        test_x=_to_uint8_nchw(test.data), test_y=torch.tensor(test.targets, dtype=torch.int64),
        classes=CIFAR10_CLASSES,
    )


def _cifar_missing(root: Path, tried: bool) -> str:
    why = "it could not be downloaded" if tried else "downloading is off"
    folder = (root / "train").is_dir() and (root / "test").is_dir()
    return (f"CIFAR-10 not found in {root}/cifar-10-batches-py and {why}: "
            f"put cifar-10-python.tar.gz (unpacked) there, or pass --data-root to where it is"
            + (f" (or, for the images in {root}/train and {root}/test, --dataset imagefolder:{root})"
               if folder else ""))


def load_imagefolder(path: str | Path, size: int = 32, train_subset: int = 0,
                     subset_seed: int = 0, legacy: bool = False) -> Dataset:
    """`train/<class>/*` and `test/<class>/*`; classes sorted by name, files by name; files
    and folders whose names start with a dot (.DS_Store, .ipynb_checkpoints) are left out.
    With `train_subset`, only the subset's training images are decoded.

    `legacy`: the listing of runs made before these rules (hidden folders were classes,
    every entry of a class folder an image, test/ could lack classes), which `load_dataset`
    falls back to for a run whose recorded checksum only that listing matches."""
    path = Path(path)
    if not (path / "train").is_dir() or not (path / "test").is_dir():
        raise DataNotFound(f"image folder {path} must contain train/<class>/ and test/<class>/")
    classes = tuple(sorted(p.name for p in (path / "train").iterdir()
                           if p.is_dir() and (legacy or not p.name.startswith("."))))
    if not classes:
        raise UserError(f"image folder {path}/train has no class folders")
    test_classes = {p.name for p in (path / "test").iterdir() if p.is_dir() and not p.name.startswith(".")}
    if test_classes != set(classes) and not legacy:
        only_train, only_test = sorted(set(classes) - test_classes), sorted(test_classes - set(classes))
        raise UserError(f"image folder {path}: train/ and test/ must have the same class folders"
                        + (f"; only in train/: {', '.join(only_train)}" if only_train else "")
                        + (f"; only in test/: {', '.join(only_test)}" if only_test else ""))
    train_files, train_y = _list_split(path, "train", classes, legacy)
    test_files, test_y = _list_split(path, "test", classes, legacy)
    keep = np.arange(len(train_files))
    if train_subset and train_subset < len(train_files):
        keep = stratified_subset(train_y, train_subset, subset_seed).numpy()
    return Dataset(f"imagefolder:{path.name}", _decode(path, [train_files[i] for i in keep], size),
                   train_y[keep], _decode(path, test_files, size), test_y, classes,
                   train_source=keep if len(keep) < len(train_files) else None,
                   train_files=tuple(_printable(train_files[i]) for i in keep))


def _printable(name: str) -> str:
    """A file name as text that every writer takes: bytes that are not UTF-8 (os gives them
    as surrogates) become backslash escapes, e.g. caf\\xe9.png."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _list_split(path: Path, name: str, classes: tuple[str, ...],
                legacy: bool = False) -> tuple[list[str], torch.Tensor]:
    """(files relative to `path`, labels) of one split, in class order, then by name."""
    files, labels = [], []
    for y, cls in enumerate(classes):
        folder = path / name / cls
        if legacy:
            found = sorted(f.name for f in folder.iterdir()) if folder.is_dir() else []
        else:
            found = sorted(f.name for f in folder.iterdir() if not f.name.startswith(".") and not f.is_dir())
            if not found:  # a class no image can teach or test: a mistake, not an 11th class
                raise UserError(f"image folder {path}: {name}/{cls} has no images; remove the folder "
                                f"or add its images")
        files += [f"{name}/{cls}/{f}" for f in found]
        labels += [y] * len(found)
    if not files:
        raise UserError(f"image folder {path}/{name} has no images")
    return files, torch.tensor(labels, dtype=torch.int64)


def _decode(path: Path, files: list[str], size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size] of the files (RGB, resized bilinearly when needed)."""
    from PIL import Image

    images = []
    for f in files:
        try:
            with Image.open(path / f) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
        except OSError:
            raise UserError(f"cannot read image {path / f}") from None
    return _to_uint8_nchw(np.stack(images))


DIGITS_TEST_FRACTION = 0.2  # 1,797 digits -> 1,438 train / 359 test (round(359.4))
DIGITS_SPLIT_SEED = 0  # fixed: the split is part of the dataset's identity


def load_digits(size: int = 32) -> Dataset:
    """scikit-learn's 8x8 digits (ships with the package: no download), as 32x32 RGB."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # pixel values 0..16
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    order = rng.permutation(len(y))
    n_test = int(round(len(y) * DIGITS_TEST_FRACTION))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    return Dataset("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                   tuple(str(i) for i in range(10)))


def make_synthetic(n_train: int = 256, n_test: int = 64, n_classes: int = 10, size: int = 32,
                   seed: int = 0) -> Dataset:
    """Class-dependent smooth colour patterns plus noise: learnable, tiny, generated."""
    g = torch.Generator().manual_seed(seed)
    # 4x4 random colour grids upsampled to size: smooth patterns a convolution learns in a few
    # steps; 70% pattern + 30% uniform noise keeps the classes apart but not trivially so
    protos = torch.rand(n_classes, 3, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=(size, size), mode="bilinear",
                                             align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % n_classes
        y = y[torch.randperm(n, generator=g)]
        x = protos[y] * 0.7 + 0.3 * torch.rand(n, 3, size, size, generator=g)
        return (x * 255).round().clamp(0, 255).to(torch.uint8), y.to(torch.int64)

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y,
                   tuple(f"class{i}" for i in range(n_classes)))


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded class-stratified subset of exactly n examples.

    Each class gets floor(n * share) examples; the few left over go to the classes with
    the largest remainders (ties by class order), so class proportions are kept.
    """
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / len(labels)
    quota = torch.floor(exact).long()
    leftover = n - int(quota.sum())
    if leftover:
        order = torch.argsort(-(exact - quota), stable=True)
        quota[order[:leftover]] += 1
    picks = []
    for c, q in zip(classes, quota):
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:int(q)]])
    return torch.sort(torch.cat(picks)).values


def load_dataset(name: str, data_root: str | Path = "data", train_subset: int = 0,
                 subset_seed: int = 0, download: bool = True, expect_sha256: str | None = None) -> Dataset:
    """Load by name: cifar10, digits, synthetic, imagefolder:<path>. `expect_sha256`: the
    checksum a run recorded; an image folder that only the older listing rules give it
    for is loaded with them (`load_imagefolder(legacy=True)`)."""
    if name.startswith("imagefolder:"):  # subsets itself: only the chosen images are decoded
        ds = _imagefolder_of_run(name[len("imagefolder:"):], train_subset, subset_seed, expect_sha256)
    else:
        if name == "cifar10":
            ds = load_cifar10(data_root, download=download)
        elif name == "digits":
            ds = load_digits()
        elif name == "synthetic":
            ds = make_synthetic()
        else:
            raise UserError(f"unknown dataset {name!r}: use cifar10, digits, synthetic or imagefolder:<path>")
        if train_subset and train_subset < len(ds.train_y):
            idx = stratified_subset(ds.train_y, train_subset, subset_seed)
            ds = replace(ds, train_x=ds.train_x[idx], train_y=ds.train_y[idx], train_source=idx.numpy())
    return ds if ds.train_source is None else replace(ds, name=f"{ds.name}[{train_subset}@{subset_seed}]")


def _imagefolder_of_run(path: str, train_subset: int, subset_seed: int,
                        expect_sha256: str | None) -> Dataset:
    """The image folder under today's rules, or under the older ones when only those give
    the checksum the run recorded (a run trained before hidden folders were left out)."""
    try:
        ds, refused = load_imagefolder(path, train_subset=train_subset, subset_seed=subset_seed), None
    except DataNotFound:
        raise
    except UserError as e:
        ds, refused = None, e
    if expect_sha256 and (ds is None or ds.identity()["sha256"] != expect_sha256):
        try:
            old = load_imagefolder(path, train_subset=train_subset, subset_seed=subset_seed, legacy=True)
        except UserError:
            old = None
        if old is not None and old.identity()["sha256"] == expect_sha256:
            return old
    if ds is None:
        raise refused
    return ds

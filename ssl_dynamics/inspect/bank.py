"""The bank: K probe images and M replays of each augmentation, built once, stored.

Every checkpoint of every seed is evaluated on exactly these inputs. The views are made
with the phase-one code (`objectives.make_views`) from a fixed generator and stored as
float32 next to their parameters, so a later machine, a later library version or another
shard evaluates the very same pixels.

    bank.h5
      attrs: schema_version, n_probe (K), n_replays (M), seed, simclr_batch, dataset_sha256,
             fingerprint (sha256 of the groups' fingerprints)
      probe_indices [K], labels [K], images uint8 [K, 3, H, W] (the probe images)
      probe_source [K]   each probe's index in the dataset's whole training split (it differs
                         from probe_indices, the index in the run's training set, only when
                         the run trained on a train_subset); banks made before it lack it
      probe_files [K]    image folders only: each probe's file, relative to the folder
      <group>/views  float32 [M_kind, K, V, 3, H, W]   V views per image
      <group>/params/<name> [M_kind, K*V]              the drawn augmentation parameters
      <group>.attrs: fingerprint, kind, views_per_image

A group holds one (augmentation kind, views per image) pair: `simclr` with 2 views for
the SimCLR objective, `supervised` and `none` with 1 for the classifiers; other pairs get
the name `<kind>-x<V>`. `none` is a point mass (no randomness), so it stores one replay.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..augment import DETERMINISTIC, make_generator
from ..config import SCHEMA_VERSION, check_schema, upgrade_augment
from ..errors import UserError
from ..objectives import make_views

ViewKey = tuple[str, int]  # (augmentation kind, views per image)
NATURAL_GROUPS = {("simclr", 2): "simclr", ("supervised", 1): "supervised", ("none", 1): "none",
                  ("normalize", 1): "normalize"}


OPTION_NAMES = {"n_probe": "--probes", "n_replays": "--replays", "seed": "--bank-seed",
                "simclr_batch": "--simclr-batch"}  # the command-line option of each BankSpec field


@dataclass(frozen=True)
class BankSpec:
    """What a bank is made of. The defaults are the thesis's and live only here."""

    n_probe: int = 1024  # K: the thesis's probe set size (4 SimCLR batches of 256)
    n_replays: int = 10  # M: augmentations per image
    seed: int = 0  # seeds the probe choice and every replay
    simclr_batch: int = 256  # B: SimCLR views are classified within fixed batches of B images

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            low = 0 if f.name == "seed" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{OPTION_NAMES[f.name]} (the bank's {f.name}) must be an integer "
                                 f">= {low}, got {v!r}")

    @classmethod
    def with_overrides(cls, **given: int | None) -> "BankSpec":
        """Defaults with the given (non-None) values; ValueError for a bad one."""
        return cls(**{k: v for k, v in given.items() if v is not None})


def group_name(key: ViewKey) -> str:
    return NATURAL_GROUPS.get(key, f"{key[0]}-x{key[1]}")


@dataclass(frozen=True)
class Bank:
    spec: BankSpec
    probe_indices: np.ndarray  # [K]
    labels: np.ndarray  # [K]
    views: dict[ViewKey, np.ndarray]  # float32 [M, K, V, 3, H, W]
    fingerprints: dict[ViewKey, str]
    dataset_sha256: str
    fingerprint: str
    images: np.ndarray | None = None  # uint8 [K, 3, H, W]; None in banks made before it was kept


def choose_probes(n_train: int, k: int, seed: int) -> np.ndarray:
    """K distinct training indices, a seeded draw (kept in drawn order: it fixes the batches).

    The thesis's code drew them with replacement (torch.randint); distinct images are a
    deliberate choice here, so that no image counts twice in r_t's distribution."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:min(k, n_train)].numpy().astype(np.int64)


def replay_views(key: ViewKey, images: torch.Tensor, n_replays: int, seed: int) -> tuple[np.ndarray, dict]:
    """[M, K, V, 3, H, W] views of uint8 images [K, 3, H, W] and their parameters."""
    kind, v = key
    m = 1 if kind in DETERMINISTIC else n_replays
    views, params = [], {}
    for j in range(m):
        out, p = make_views(kind, images, v, make_generator(seed, "bank", kind, j))
        views.append(out.reshape(len(images), v, *images.shape[1:]).numpy())
        for name, t in p.items():
            params.setdefault(name, []).append(t.numpy())
    return np.stack(views).astype(np.float32), {k: np.stack(a) for k, a in params.items()}


def _hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def bank_bytes(spec: BankSpec, keys: list[ViewKey], image_shape: tuple[int, ...]) -> int:
    """Size of the bank's views on disk (float32), for the space check before building it."""
    k, per_view = spec.n_probe, int(np.prod(image_shape)) * 4
    return sum((1 if kind in DETERMINISTIC else spec.n_replays) * k * v * per_view for kind, v in keys)


def build_bank(path: str | Path, train_x: torch.Tensor, train_y: torch.Tensor, keys: list[ViewKey],
               dataset_sha256: str, spec: BankSpec = BankSpec(), source: np.ndarray | None = None,
               files: tuple[str, ...] | None = None) -> Bank:
    """Build and atomically write the bank for the given (kind, views per image) pairs.
    `source` / `files`: each training image's index in the whole training split / its file
    (`Dataset.source_index()`, `Dataset.train_files`), recorded for the probes."""
    import h5py

    idx = choose_probes(len(train_x), spec.n_probe, spec.seed)
    spec = BankSpec(len(idx), spec.n_replays, spec.seed, spec.simclr_batch)
    images = train_x[torch.from_numpy(idx)]
    labels = train_y[torch.from_numpy(idx)].numpy()
    views, fps = {}, {}
    art.remove_stale_temps(Path(path).parent, f".{Path(path).name}.*.tmp")
    with art.h5_atomic(path) as f:
        f.create_dataset("probe_indices", data=idx)
        f.create_dataset("labels", data=labels)
        f.create_dataset("images", data=images.numpy())
        f.create_dataset("probe_source", data=(idx if source is None else np.asarray(source)[idx]).astype(np.int64))
        if files is not None:
            f.create_dataset("probe_files", data=np.array([files[i] for i in idx], dtype=object),
                             dtype=h5py.string_dtype())
        for key in sorted(set(keys)):
            v, params = replay_views(key, images, spec.n_replays, spec.seed)
            g = f.create_group(group_name(key))
            # one chunk per replay: evaluation reads whole replays
            g.create_dataset("views", data=v, chunks=(1, *v.shape[1:]))
            for name, arr in params.items():
                g.create_dataset(f"params/{name}", data=arr)
            fps[key] = _hash(idx, labels, v)
            g.attrs.update({"fingerprint": fps[key], "kind": key[0], "views_per_image": key[1]})
            views[key] = v
        fingerprint = _fingerprint(fps)
        f.attrs.update({"schema_version": SCHEMA_VERSION, **asdict(spec),
                        "dataset_sha256": dataset_sha256, "fingerprint": fingerprint})
    return Bank(spec, idx, labels, views, fps, dataset_sha256, fingerprint, images.numpy())


def _fingerprint(fps: dict[ViewKey, str]) -> str:
    ordered = [fps[k] for k in sorted(fps, key=group_name)]
    return _hash(np.frombuffer("".join(ordered).encode(), np.uint8))


def _group_key(name: str, g, schema_version: int) -> ViewKey:
    """(kind, V) of a bank group; banks made before these attributes derive it from the
    group's name and its views' shape. Before schema 2, "none" views were normalized: today's
    "normalize" (config.upgrade_augment)."""
    return upgrade_augment(str(g.attrs.get("kind", name)), schema_version), int(g["views"].shape[2])


def _schema(f) -> int:
    return check_schema(f.attrs.get("schema_version"), f"bank {f.filename}")


def read_spec(path: str | Path) -> tuple[BankSpec, str, list[ViewKey]]:
    """(spec, dataset sha256, view keys) of an existing bank, without reading its views."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            schema = _schema(f)  # first: a newer bank's layout is not this version's to judge
            spec = BankSpec(**{fl.name: int(f.attrs[fl.name]) for fl in fields(BankSpec)})
            keys = [_group_key(n, f[n], schema) for n in f if isinstance(f[n], h5py.Group)]
            return spec, str(f.attrs["dataset_sha256"]), keys
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"corrupt bank {path}: {e}") from None


def read_fingerprint(path: str | Path) -> str:
    """The fingerprint of an existing bank, without reading its views."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            _schema(f)
            return str(f.attrs["fingerprint"])
    except (OSError, KeyError) as e:
        raise UserError(f"corrupt bank {path}: {e}") from None


def read_probes(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """(probe indices, probe images uint8 [K, 3, H, W] or None, sources) without reading the
    views; sources: {"source_index": int64 [K], "source_file": str [K] (image folders)} as far
    as the bank records them (banks made before the images or the sources were kept lack them)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            _schema(f)  # a newer bank may keep its images otherwise
            sources = {}
            if "probe_source" in f:
                sources["source_index"] = f["probe_source"][:].astype(np.int64)
            if "probe_files" in f:
                sources["source_file"] = np.array(f["probe_files"].asstr()[:], dtype=object)
            return f["probe_indices"][:], (f["images"][:] if "images" in f else None), sources
    except (OSError, KeyError) as e:
        raise UserError(f"corrupt bank {path}: {e}") from None


def load_bank(path: str | Path) -> Bank:
    import h5py

    path = Path(path)
    if not path.exists():
        raise UserError(f"no bank at {path}: run `inspect rt` first")
    spec, sha, _ = read_spec(path)
    try:
        with h5py.File(path, "r") as f:
            groups = {n: f[n] for n in f if isinstance(f[n], h5py.Group)}
            keys = {_group_key(n, g, _schema(f)): g for n, g in groups.items()}
            return Bank(spec, f["probe_indices"][:], f["labels"][:],
                        {k: g["views"][:] for k, g in keys.items()},
                        {k: str(g.attrs["fingerprint"]) for k, g in keys.items()},
                        sha, str(f.attrs["fingerprint"]),
                        f["images"][:] if "images" in f else None)
    except (OSError, KeyError) as e:
        raise UserError(f"corrupt bank {path}: {e}") from None


def _option_diff(key: str, asked: int, have: int, n_train: int) -> str:
    """`--probes 64 (48 after capping at the training set's 48 images), the bank has 32`."""
    capped = f" ({n_train} after capping at the training set's {n_train} images)" \
        if key == "n_probe" and asked > n_train else ""
    return f"{OPTION_NAMES.get(key, key)} {asked}{capped}, the bank has {have}"


def check_existing(path: Path, requested: dict[str, int | None], keys: list[ViewKey],
                   dataset_sha256: str, n_train: int) -> BankSpec:
    """The spec of the bank at `path`, refusing requested values that contradict it."""
    spec, sha, have = read_spec(path)
    if sha != dataset_sha256:
        raise UserError(f"{path} was built from another dataset (sha256 {sha[:12]}...) than this "
                        f"run's ({dataset_sha256[:12]}...): it is another run's bank; use another "
                        f"--work folder, or pass --bank with a new path")
    diffs = [_option_diff(k, v, getattr(spec, k), n_train) for k, v in requested.items()
             if v is not None and getattr(spec, k) != (min(v, n_train) if k == "n_probe" else v)]
    if diffs:
        raise UserError(f"{path} was built with other settings: {'; '.join(diffs)}; drop those "
                        f"options to use it, or pass --bank with a new path")
    missing = [group_name(k) for k in keys if k not in have]
    if missing:
        raise UserError(f"{path} has no replays for {', '.join(missing)}; pass --bank with a new "
                        f"path to build a complete one")
    return spec

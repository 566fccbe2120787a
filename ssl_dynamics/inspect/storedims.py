"""Named dimensions and coordinates of the r_t store, in the form xarray reads.

xarray takes a Zarr v3 array's dimension names from its metadata (`dimension_names` in
`zarr.json`) and needs them on every array of a group. Each setup group therefore holds

    correct, p_true  (seed, epoch, replay, probe, view)
    done             (seed, epoch)
    sha256           (seed, epoch, sha256_byte)   the checkpoint each chunk was evaluated from
    targets          (probe)
    seed [S], epoch [E], replay [M], probe [K], view [V]   one coordinate per dimension
    label (probe)                                          true class of each probe image

`probe` holds the dataset indices of the probe images and `seed` the model seeds in the
store's order; `label` is a non-dimension coordinate (the data variables name it in their
`coordinates` attribute); `sha256_byte`, the byte axis of `sha256`, has no coordinate in
Zarr. The root arrays `probe_indices` and `labels` have dimension `probe`. No `_FillValue`
attribute is written: Zarr's own fill values (0, NaN) stay, and xarray returns uint8 and
float32 exactly as stored.

Stores written before the names existed are upgraded in place: each array's `zarr.json`
is rewritten with its names (chunk files are not touched, nothing is re-evaluated) and the
coordinate arrays are added. A setup group is committed by its attributes (`COMMIT_ATTRS`,
written last): a group without them was cut short while being made, and one whose arrays or
coordinates disagree in length with them was cut short while growing its seed axis; both
count as needing the upgrade, which the store repairs under its lock (`RtStore.upgrade`).
Metadata is consolidated at the root after every structural change so that `xr.open_zarr`
reads it in one go; the toolkit itself never trusts the consolidated copy (it opens with
`use_consolidated=False`), since a resize makes it stale until the next consolidation.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import artifacts as art

FULL_DIMS = ("seed", "epoch", "replay", "probe", "view")
ARRAY_DIMS = {"correct": FULL_DIMS, "p_true": FULL_DIMS, "done": ("seed", "epoch"),
              "targets": ("probe",)}
ROOT_DIMS = {"probe_indices": ("probe",), "labels": ("probe",)}
COORD_DIMS = {**{d: (d,) for d in FULL_DIMS}, "label": ("probe",)}
# The sha256 of the checkpoint each (seed, epoch) chunk was evaluated from, as its 32 bytes:
# uint8 keeps to Zarr v3's specified data types (fixed-width strings are not, and warn),
# and zeros (the fill value) mean "not recorded" (stores written before the record existed).
SHA_ARRAY, SHA_BYTES = "sha256", 32
RECORD_DIMS = {SHA_ARRAY: ("seed", "epoch", "sha256_byte")}
# Attributes that RtStore._create writes last, in one write of zarr.json (`update_attributes`;
# zarr's `attrs.update` writes once per key): they commit a setup group.
COMMIT_ATTRS = ("seeds", "epochs", "shape")
# Arrays whose first axis is the seed axis, which grows when seeds are added to a run.
SEED_GROWN = ("correct", "p_true", "done", SHA_ARRAY)
LABEL_COORD = "label"  # the non-dimension coordinate, named in `coordinates` attributes
WITH_LABEL = ("correct", "p_true", "targets")
META = "zarr.json"


def array_options(name: str) -> dict[str, Any]:
    """`create_array` keyword arguments that name the dimensions of a store array."""
    dims = ARRAY_DIMS.get(name) or RECORD_DIMS.get(name) or ROOT_DIMS.get(name) or COORD_DIMS[name]
    opts: dict[str, Any] = {"dimension_names": list(dims)}
    if name in WITH_LABEL:
        opts["attributes"] = {"coordinates": LABEL_COORD}
    return opts


def coordinate_values(attrs: dict, probe_indices: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The coordinate arrays of a setup group, from its attributes and the probe set."""
    _, _, m, k, v = attrs["shape"]
    if len(probe_indices) != k:
        raise ValueError(f"the store's probe set has {len(probe_indices)} images, the setup {k}")
    return {"seed": np.asarray(attrs["seeds"], dtype=np.int64),
            "epoch": np.asarray(attrs["epochs"], dtype=np.int64),
            "replay": np.arange(m, dtype=np.int64), "probe": np.asarray(probe_indices, np.int64),
            "view": np.arange(v, dtype=np.int64), "label": np.asarray(labels, np.int64)}


def committed(attrs: dict) -> bool:
    """Whether a setup group's attributes commit it (see COMMIT_ATTRS)."""
    return all(k in attrs for k in COMMIT_ATTRS)


def expected_shapes(attrs: dict) -> dict[str, list[int]] | None:
    """The shape of every array of a committed setup group, from its attributes; None when
    the attributes themselves are malformed (nothing to repair them from)."""
    try:
        s, e, m, k, v = (int(n) for n in attrs["shape"])
        if len(attrs["seeds"]) != s or len(attrs["epochs"]) != e:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return {"correct": [s, e, m, k, v], "p_true": [s, e, m, k, v], "done": [s, e],
            SHA_ARRAY: [s, e, SHA_BYTES], "targets": [k], "seed": [s], "epoch": [e],
            "replay": [m], "probe": [k], "view": [v], "label": [k]}


def _misfit(group: str, attrs: dict, nodes: dict[str, dict]) -> bool:
    """True when an array or coordinate of the group disagrees in shape with its attributes."""
    want = expected_shapes(attrs)
    return want is not None and any(
        f"{group}/{name}" in nodes and nodes[f"{group}/{name}"].get("shape") != shape
        for name, shape in want.items())


def fit_to_attrs(group, attrs: dict, coords: dict[str, np.ndarray]) -> None:
    """Bring a committed setup group back in line with its attributes after a kill while its
    seed axis grew: seed-axis arrays resized (rows beyond the committed seeds hold nothing:
    nothing is written there before the attributes commit them), coordinates rewritten from
    `coords`. Any other disagreement is damage, not an interrupted growth: ValueError."""
    for name, want in (expected_shapes(attrs) or {}).items():
        if name not in group or list(group[name].shape) == want:
            continue
        arr = group[name]
        if name in COORD_DIMS:
            arr.resize(tuple(want))
            arr[:] = coords[name]
        elif name in SEED_GROWN and list(arr.shape[1:]) == want[1:]:
            arr.resize(tuple(want))
        else:
            raise ValueError(f"{name} has shape {list(arr.shape)}, the setup's attributes say {want}")


def write_coordinates(group, values: dict[str, np.ndarray]) -> None:
    """Create the coordinate arrays that `group` lacks."""
    for name, data in values.items():
        if name not in group:
            group.create_array(name, data=data, **array_options(name))


def write_seed_coordinate(group, seeds: list[int]) -> None:
    """Keep the `seed` coordinate in step with a grown seed axis."""
    arr = group["seed"]
    if arr.shape != (len(seeds),):
        arr.resize((len(seeds),))
    arr[:] = np.asarray(seeds, dtype=np.int64)


def _read_meta(folder: Path) -> dict | None:
    path = folder / META
    return json.loads(path.read_text()) if path.is_file() else None


def _nodes(root: Path) -> dict[str, dict]:
    """Relative path -> metadata of the groups and arrays below the root, two levels deep
    (the store's whole layout), without descending into the many chunk folders."""
    out = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = _read_meta(child)
        if meta is None:
            continue
        out[child.name] = meta
        if meta.get("node_type") == "group":
            for sub in sorted(p for p in child.iterdir() if p.is_dir()):
                if (sub_meta := _read_meta(sub)) is not None:
                    out[f"{child.name}/{sub.name}"] = sub_meta
    return out


def _unnamed(nodes: dict[str, dict]) -> list[tuple[str, tuple[str, ...]]]:
    """(path, dims) of the store's known arrays that lack dimension names."""
    out = []
    for rel, meta in nodes.items():
        parts = rel.split("/")
        dims = (ROOT_DIMS.get(rel) if len(parts) == 1
                else ARRAY_DIMS.get(parts[-1]) or RECORD_DIMS.get(parts[-1]) if len(parts) == 2 else None)
        if dims and meta.get("node_type") == "array" and not meta.get("dimension_names"):
            out.append((rel, dims))
    return out


def needs_upgrade(root: str | Path) -> bool:
    """True when the store lacks dimension names, coordinate arrays, or fresh consolidated
    metadata, or holds a setup group cut short while being made or grown (uncommitted, or
    arrays and coordinates whose lengths disagree with its attributes). Reads metadata files
    only (works on read-only media)."""
    root = Path(root)
    top = _read_meta(root)
    if top is None:
        return False
    nodes = _nodes(root)
    if _unnamed(nodes):
        return True
    groups = {rel: m.get("attributes") or {} for rel, m in nodes.items()
              if "/" not in rel and m.get("node_type") == "group"}
    if not all(committed(a) for a in groups.values()):
        return True
    if any(f"{g}/{c}" not in nodes for g in groups for c in COORD_DIMS):
        return True
    if any(_misfit(g, a, nodes) for g, a in groups.items()):
        return True
    return _consolidated_stale(top, nodes)


def _consolidated_stale(top: dict, nodes: dict[str, dict]) -> bool:
    """True when the root's consolidated metadata is missing or disagrees with the files."""
    cons = (top.get("consolidated_metadata") or {}).get("metadata")
    if cons is None or set(cons) != set(nodes):
        return True
    keys = ("shape", "dimension_names", "attributes")
    return any(cons[rel].get(k) != meta.get(k) for rel, meta in nodes.items() for k in keys)


def name_dimensions(root: str | Path) -> int:
    """Add dimension names (and the `coordinates` attribute) to every known array of the
    store that lacks them, by rewriting its zarr.json atomically; chunk files are left as
    they are. The caller holds the store's lock. Returns the number of arrays changed."""
    root = Path(root)
    todo = _unnamed(_nodes(root))
    for rel, dims in todo:
        folder = root / rel
        meta = _read_meta(folder)
        meta["dimension_names"] = list(dims)
        if rel.split("/")[-1] in WITH_LABEL and "/" in rel:
            meta["attributes"] = {**meta.get("attributes", {}), "coordinates": LABEL_COORD}
        art.write_bytes_atomic(folder / META, json.dumps(meta, indent=2).encode())
    return len(todo)


def consolidate(root: str | Path) -> None:
    """Consolidate the store's metadata at its root (the caller holds the store's lock)."""
    import zarr

    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not part of the v3 spec yet; xarray reads it
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(str(root))

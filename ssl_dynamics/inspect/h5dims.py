"""HDF5 dimension scales, the form in which netCDF readers (h5netcdf, xarray) name dimensions.

A 1-D coordinate dataset becomes a dimension scale named like itself; a data set of the
same group attaches one scale to each of its axes. Every axis gets one: h5netcdf refuses
a partly labelled dataset, and gives an unlabelled one made-up `phony_dim_*` names.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def add_coordinate(group, name: str, values) -> object:
    """A 1-D dataset `name` in `group`, made the dimension scale of dimension `name`."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"coordinate {name} must be 1-D, got shape {values.shape}")
    if values.dtype.kind == "U":
        import h5py

        values = values.astype(object)
        ds = group.create_dataset(name, data=values, dtype=h5py.string_dtype())
    else:
        ds = group.create_dataset(name, data=values)
    ds.make_scale(name)
    return ds


def attach(dataset, group, dims: Sequence[str]) -> None:
    """Attach the scales `group[dim]` to the axes of `dataset`, one per axis, in order."""
    dims = tuple(dims)
    if len(dims) != dataset.ndim:
        raise ValueError(f"{dataset.name} has {dataset.ndim} axes but {len(dims)} dimension names {dims}")
    for axis, dim in enumerate(dims):
        if dim not in group:
            raise ValueError(f"{dataset.name}: no coordinate {dim!r} in group {group.name}")
        scale = group[dim]
        if scale.shape != (dataset.shape[axis],):
            raise ValueError(f"{dataset.name}: axis {axis} has length {dataset.shape[axis]}, "
                             f"coordinate {dim!r} has {scale.shape[0]}")
        dataset.dims[axis].attach_scale(scale)

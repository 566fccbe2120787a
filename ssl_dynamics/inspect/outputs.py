"""Where analyses put what they derive: an analysis HDF5, CSV/JSON tables, PNG+PDF figures.

    <work>/analysis.h5          one group per analysis, arrays + attributes; named
                                dimensions (HDF5 dimension scales) where they are clear
    <work>/tables/<name>.csv    the same tables as CSV ...
    <work>/tables/<name>.json   ... and JSON (list of row objects, in the CSV's column order)
    <work>/figures/<name>.png   every figure, plus <name>.pdf

(<work> is <run>/inspect unless `--work` says otherwise.)

All writes are atomic. analysis.h5 is updated by copying it, changing the copy and
renaming it over the original, so a crash never leaves a half-written archive.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import artifacts as art

FIGURE_DPI = 150  # crisp in the HTML report, small enough to embed


class Outputs:
    def __init__(self, work_dir: str | Path):
        self.root = Path(work_dir)
        self.tables = self.root / "tables"
        self.figures = self.root / "figures"
        self.analysis = self.root / "analysis.h5"

    def write_arrays(self, group: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any] | None = None,
                     dims: dict[str, tuple[str, ...]] | None = None,
                     coords: dict[str, np.ndarray] | None = None):
        """Replace `group` in analysis.h5 with these arrays (and JSON-able attributes).

        ``coords`` ("sub/group/name" -> 1-D values) become HDF5 dimension scales named like
        their last part; ``dims`` (array name -> one dimension name per axis) attaches to
        each axis of that array the coordinate of the same name in the array's own group,
        so that ``xr.open_dataset(analysis.h5, group="<group>/sub/group", engine="h5netcdf")``
        gives named dimensions. Arrays without ``dims`` stay unlabelled."""
        import h5py

        from . import h5dims

        dims, coords = dims or {}, coords or {}
        unknown = sorted(set(dims) - set(arrays))
        if unknown:
            raise ValueError(f"dims given for arrays that are not written: {', '.join(unknown)}")
        with art.atomic_path(self.analysis) as tmp:
            if self.analysis.exists():
                shutil.copyfile(self.analysis, tmp)
            with h5py.File(tmp, "a") as f:
                if group in f:
                    del f[group]
                g = f.create_group(group)
                for path, values in coords.items():
                    parent, _, name = path.rpartition("/")
                    h5dims.add_coordinate(g.require_group(parent) if parent else g, name, values)
                for name, arr in arrays.items():
                    ds = g.create_dataset(name, data=np.asarray(arr))
                    if name in dims:
                        h5dims.attach(ds, ds.parent, dims[name])
                for k, v in (attrs or {}).items():
                    g.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)

    def write_table(self, name: str, rows: list[dict[str, Any]], note: str = "") -> Path:
        """rows as tables/<name>.csv and tables/<name>.json; returns the CSV path."""
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _plain(v) for k, v in r.items()})
        path = self.tables / f"{name}.csv"
        art.write_bytes_atomic(path, buf.getvalue().encode())
        art.write_json_atomic(self.tables / f"{name}.json",
                              {"note": note, "columns": cols,
                               "rows": [{k: _plain(v) for k, v in r.items()} for r in rows]})
        return path

    def save_figure(self, fig, name: str) -> Path:
        """PNG and PDF of a matplotlib figure; closes it. Returns the PNG path."""
        import matplotlib.pyplot as plt

        out = None
        for ext in ("png", "pdf"):
            path = self.figures / f"{name}.{ext}"
            buf = io.BytesIO()
            # no timestamps in the PDF: the same data gives the same file
            fig.savefig(buf, format=ext, dpi=FIGURE_DPI, bbox_inches="tight",
                        metadata={"CreationDate": None} if ext == "pdf" else None)
            art.write_bytes_atomic(path, buf.getvalue())
            out = out or path
        plt.close(fig)
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None if np.isnan(v) else str(v)
    return v


def format_table(rows: Iterable[dict[str, Any]], floatfmt: str = ".4g") -> str:
    """A fixed-width text table for the terminal."""
    rows = list(rows)
    if not rows:
        return "(empty)"
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def matplotlib_agg():
    """matplotlib with the file-only backend and fixed style, so figures are reproducible."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.max_open_warning": 0, "svg.hashsalt": "ssl-dynamics"})
    return plt

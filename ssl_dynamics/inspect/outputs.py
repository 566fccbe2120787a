"""Where analyses put what they derive: an analysis HDF5, CSV/JSON tables, PNG+PDF figures.

    <work>/analysis.h5          one group per analysis, arrays + attributes; named
                                dimensions (HDF5 dimension scales) where they are clear
    <work>/tables/<name>.csv    the same tables as CSV ...
    <work>/tables/<name>.json   ... and JSON (list of row objects, in the CSV's column order)
    <work>/figures/<name>.png   every figure, plus <name>.pdf
    <work>/outputs.json         which write (one `Outputs`, i.e. one command) made each
                                table and figure: the report shows only outputs of an
                                analysis's latest run (`stale_outputs`)

(<work> is <run>/inspect unless `--work` says otherwise.)

All writes are atomic and happen under one lock per work folder (<work>/analysis.h5.lock),
so that concurrent commands never lose each other's analysis.h5 groups and a command that
starts may remove what killed writers left (temporary files) without touching a live one.
analysis.h5 is updated by building the new file in memory from the old one and renaming
it into place (`art.h5_atomic`): a crash or a full disk never leaves a half-written archive.
A damaged analysis.h5 (it is derived) is moved aside as analysis.h5.corrupt-<time> and a
new one started. A figure's PNG and PDF, and a table's CSV and JSON, are two renames: a
kill between them leaves a mixed pair, which `inspect all`'s up-to-date record (written
after both) does not vouch for.
"""
from __future__ import annotations

import csv
import datetime as _dt
import fnmatch
import hashlib
import io
import json
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .. import artifacts as art
from ..artifacts.atomic import fsync_dir
from ..errors import UserError

FIGURE_DPI = 150  # crisp in the HTML report, small enough to embed


LOCK_NAME = "analysis.h5.lock"  # one per work folder: every write of these outputs holds it
RECORD_NAME = "outputs.json"  # name of a table or figure -> the write session that made it
STALE_DIR = "stale"  # outputs of an analysis that failed in `inspect all`, kept aside
# Files of the work folder itself that only these writers write (their temporaries may go)
SOURCES_NAME = "sources.json"  # write session -> the r_t store its analyses read (`note_store`)
OWN_FILES = ("analysis.h5", RECORD_NAME, SOURCES_NAME, "skipped.json", "steps.json", "work.json")
# The analyses that read the r_t store (the others read checkpoints and the dataset)
STORE_STEPS = ("dynamics", "binomial", "heterogeneity", "classes", "examples")
# What each analysis of `inspect all` writes: table and figure names (fnmatch patterns) and
# its analysis.h5 group. The first name is written whenever the analysis succeeds: it dates
# the others (an output that another run of the analysis wrote is stale, `stale_outputs`).
STEP_OUTPUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "dynamics": (("aligned_epochs", "fig4_1_sorted_rt", "fig4_2_aligned"), "dynamics"),
    "binomial": (("table4_1_chisquare", "table4_2_mae", "fig4_3_binomial_counts",
                  "fig4_3_sorted_rtilde", "fig4_4_binomial_noise", "fig4_5_aug_spread",
                  "figB_1_first_second", "first_second_diff"), "binomial"),
    "heterogeneity": (("heterogeneity", "fig_heterogeneity", "hardness_agreement",
                       "fig_hardness_agreement"), "heterogeneity"),
    "classes": (("class_rt", "fig5_3_class_rt"), "classes"),
    "examples": (("examples_summary", "examples_rank_agreement", "examples_cartography",
                  "examples_forgetting", "examples_hardest_*", "examples_easiest_*", "examples"),
                 "examples"),
    "probe": (("tableB_1_probe",), "probe"),
    "tsne": (("fig5_1_tsne",), "tsne"),
    "kl": (("kl_pairs", "fig5_2_kl"), "kl"),
    "activations": (("activations", "fig5_4_activations"), "activations"),
}


class Outputs:
    def __init__(self, work_dir: str | Path, echo=print):
        self.root = Path(work_dir)
        self.tables = self.root / "tables"
        self.figures = self.root / "figures"
        self.analysis = self.root / "analysis.h5"
        self.echo = echo
        self.session = uuid.uuid4().hex  # recorded beside every table and figure written here
        self.written: list[str] = []  # files written by this instance (relative to root), in order
        self.groups: list[str] = []  # analysis.h5 groups written by this instance
        # sha256 of each file and group as written here, taken under the lock right after the
        # write (what `inspect all` records as a step's outputs; its caller clears them)
        self.hashes: dict[str, str | None] = {}
        self.group_digests: dict[str, str | None] = {}
        self._started = False
        self._source: dict | None = None  # the r_t store this session's analyses read

    def lock(self):
        """The work folder's lock (re-entrant within this process)."""
        return work_lock(self.root)

    def _start(self) -> None:
        """Before the first write: record the run in the work folder, remove what killed
        writers left. Called under the lock."""
        if self._started:
            return
        self._started = True
        from .workspace import bind_folder

        bind_folder(self.root)
        self.tidy()
        self._write_source()

    def tidy(self) -> int:
        """Remove the temporary files killed writes of these outputs left (analysis.h5,
        tables, figures, the report, the work folder's records); returns how many. Under the
        lock, which every writer of them holds while its temporary file exists."""
        with self.lock():
            n = sum(art.remove_stale_temps(self.root, f".{name}.*.tmp") for name in OWN_FILES)
            n += art.remove_stale_temps(self.figures) + art.remove_stale_temps(self.root / "report")
            return n + art.remove_stale_temps(self.tables)

    def sweeps(self, path: str | Path) -> bool:
        """Whether `path` lies in what the analyses write and `tidy` sweeps: anywhere under
        tables/, figures/ or report/ (tidy sweeps their top level: a writer there must hold
        the lock while its temporary file exists), or one of the work folder's records."""
        where = Path(path).resolve()
        swept = {self.figures.resolve(), (self.root / "report").resolve(), self.tables.resolve()}
        return bool(swept & set(where.parents)) or (where.parent == self.root.resolve()
                                                    and where.name in OWN_FILES)

    def check_analysis(self) -> Path | None:
        """Move a damaged analysis.h5 aside (it is derived: the analyses write its groups
        again) as analysis.h5.corrupt-<UTC time>, saying so in one line; returns where."""
        with self.lock():
            if not self.analysis.exists() or _readable_h5(self.analysis):
                return None
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
            aside = self.analysis.with_name(f"{self.analysis.name}.corrupt-{stamp}")
            os.replace(self.analysis, aside)
            fsync_dir(self.root)
        self.echo(f"{self.analysis} cannot be read (damaged); moved it to {aside.name} and "
                  f"started a new one (the analyses write their groups again)")
        return aside

    def write_arrays(self, group: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any] | None = None,
                     dims: dict[str, tuple[str, ...]] | None = None,
                     coords: dict[str, np.ndarray] | None = None):
        """Replace `group` in analysis.h5 with these arrays (and JSON-able attributes).

        ``coords`` ("sub/group/name" -> 1-D values) become HDF5 dimension scales named like
        their last part; ``dims`` (array name -> one dimension name per axis) attaches to
        each axis of that array the coordinate of the same name in the array's own group,
        so that ``xr.open_dataset(analysis.h5, group="<group>/sub/group", engine="h5netcdf")``
        gives named dimensions. Arrays without ``dims`` stay unlabelled."""
        dims, coords = dims or {}, coords or {}
        unknown = sorted(set(dims) - set(arrays))
        if unknown:
            raise ValueError(f"dims given for arrays that are not written: {', '.join(unknown)}")
        with self.lock():
            self._start()
            self.check_analysis()
            with art.h5_atomic(self.analysis, update=True) as f:
                if group in f:
                    del f[group]
                _fill_group(f.create_group(group), arrays, attrs or {}, dims, coords)
            self.groups.append(group)
            self.group_digests[group] = group_digest(self.analysis, group)

    def remove_group(self, group: str, aside: Path | None = None) -> None:
        """Take `group` out of analysis.h5, copied first into the HDF5 file `aside` if given."""
        import h5py

        with self.lock():
            if not self.analysis.exists() or not _readable_h5(self.analysis):
                return
            with h5py.File(self.analysis, "r") as f:
                if group not in f:
                    return
                if aside is not None:
                    with art.h5_atomic(aside, update=True) as dst:
                        if group in dst:
                            del dst[group]
                        f.copy(f[group], dst, name=group)
            with art.h5_atomic(self.analysis, update=True) as f:
                del f[group]

    def write_table(self, name: str, rows: list[dict[str, Any]], note: str = "") -> Path:
        """rows as tables/<name>.csv and tables/<name>.json; returns the CSV path."""
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _plain(v) for k, v in r.items()})
        path = self.tables / f"{name}.csv"
        with self.lock():
            self._start()
            art.write_bytes_atomic(path, buf.getvalue().encode())
            art.write_json_atomic(self.tables / f"{name}.json",
                                  {"note": note, "columns": cols,
                                   "rows": [{k: _plain(v) for k, v in r.items()} for r in rows]})
            self._record(name, [path, self.tables / f"{name}.json"])
        return path

    def save_figure(self, fig, name: str) -> Path:
        """PNG and PDF of a matplotlib figure; closes it. Returns the PNG path."""
        import matplotlib.pyplot as plt

        data = {}
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            # no timestamps in the PDF: the same data gives the same file
            fig.savefig(buf, format=ext, dpi=FIGURE_DPI, bbox_inches="tight",
                        metadata={"CreationDate": None} if ext == "pdf" else None)
            data[self.figures / f"{name}.{ext}"] = buf.getvalue()
        plt.close(fig)
        with self.lock():
            self._start()
            for path, content in data.items():
                art.write_bytes_atomic(path, content)
            self._record(name, list(data))
        return self.figures / f"{name}.png"

    def note_files(self, paths: list[Path]) -> None:
        """Note files just written here (under the lock): their names and sha256."""
        with self.lock():
            for p in paths:
                name = str(Path(p).relative_to(self.root))
                self.written.append(name)
                try:
                    self.hashes[name] = art.sha256_file(p)
                except OSError:
                    self.hashes[name] = None

    def note_store(self, path: str | Path, data: dict, snapshot: tuple[str, int] | None = None,
                   run_root: str | Path | None = None) -> None:
        """Note that this session's analyses read the r_t store at `path` (`data`: its
        `SetupRt`s as read; `snapshot`: `rt_plan.Evaluations.snapshot` of their setups, taken
        before reading), so that the report can say which store each analysis used, and
        whether it changed after. A store inside the work folder (or the run, `run_root`) is
        also recorded relative to it, to be found when the folder is moved or copied.
        Recorded in sources.json with this session's first output (a refused analysis
        records nothing)."""
        from .rtdata import open_store

        first = next(iter(data.values()), None)
        shape = {} if first is None else {"probes": int(first.correct.shape[3]),
                                          "replays": int(first.correct.shape[2])}
        with open_store(path) as st:  # the same evaluations keep their id when copied or exported
            store_id = st.root_attrs().get("store_id")
        where = Path(path).resolve()
        read = {} if snapshot is None else {"setups": list(data), "state": snapshot[0],
                                            "evaluated": int(snapshot[1])}
        for key, folder in (("in_work", self.root), ("in_run", run_root)):
            if folder is not None and Path(folder).resolve() in where.parents:
                read[key] = where.relative_to(Path(folder).resolve()).as_posix()
                break
        self._source = {"store": str(where), **shape,
                        **({"store_id": str(store_id)} if store_id else {}), **read}
        mine = store_key(self._source)
        others = sorted({src["store"] for src in stores_of_outputs(self.root).values()
                         if store_key(src) != mine})
        if others:
            self.echo(f"note: other analyses in {self.root} read another r_t store ({', '.join(others)}); "
                      f"the report says which read which")
        if self._started:
            with self.lock():
                self._write_source()

    def _write_source(self) -> None:
        """sources.json: this session's store, beside those of sessions whose outputs
        remain. Under the lock."""
        if self._source is None:
            return
        live = set(read_record(self.root).values())
        record = {k: v for k, v in _read_dict(self.root / SOURCES_NAME).items() if k in live}
        record[self.session] = self._source
        art.write_json_atomic(self.root / SOURCES_NAME, record)

    def _record(self, name: str, paths: list[Path]) -> None:
        """Note the files, and that this session made `<tables|figures>/<name>` (in
        outputs.json). Under the lock."""
        self.note_files(paths)
        record = read_record(self.root)
        record[f"{paths[0].parent.name}/{name}"] = self.session
        art.write_json_atomic(self.root / RECORD_NAME, record)

    def move_aside(self, step: str) -> list[str]:
        """Move the tables and figures of `step` (STEP_OUTPUTS) to <work>/stale/<step>/
        (replacing what an earlier failure left there) and its analysis.h5 group into
        stale/<step>/analysis.h5: they are not this run's. Returns the names moved."""
        patterns, group = STEP_OUTPUTS[step]
        aside = self.root / STALE_DIR / step
        moved = []
        with self.lock():
            for folder in (self.tables, self.figures):
                for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                    if path.name.startswith(".") or not matches(path.stem, patterns):
                        continue
                    (aside / folder.name).mkdir(parents=True, exist_ok=True)
                    os.replace(path, aside / folder.name / path.name)
                    moved.append(path.stem)
            self.remove_group(group, aside / "analysis.h5")
        return sorted(set(moved))


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def read_record(root: Path) -> dict[str, str]:
    """outputs.json: "tables/<name>" or "figures/<name>" -> the session that wrote it ({}
    when missing or unreadable: nothing is known)."""
    return _read_dict(Path(root) / RECORD_NAME)


def _read_dict(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def store_key(source: dict) -> str:
    """What makes two recorded stores the same evaluations: the store's id (kept when a store
    is exported or its run moved), else its path (stores made before ids)."""
    return str(source.get("store_id") or source.get("store"))


def stores_of_outputs(root: Path) -> dict[str, dict]:
    """Step -> the r_t store ({"store": path, "probes": K, "replays": M}) that the latest run
    of each store-reading analysis (STORE_STEPS) in the work folder read; steps without
    outputs, or whose run recorded no store (made before stores were recorded), are left out."""
    record, sources = read_record(root), _read_dict(Path(root) / SOURCES_NAME)
    out = {}
    for step in STORE_STEPS:
        session = _anchor_session(record, step)
        if isinstance(sources.get(session), dict) and isinstance(sources[session].get("store"), str) \
                and sources[session]["store"]:
            out[step] = sources[session]
    return out


def located_store(src: dict, work: Path, run_root: Path | None = None) -> Path:
    """Where a store recorded in sources.json is now: one recorded inside the work folder
    (or the run) is looked for there, since the folder may have been moved or copied
    (`Outputs.note_store`); any other at its recorded path."""
    for key, folder in (("in_work", work), ("in_run", run_root)):
        rel = src.get(key)
        if folder is not None and isinstance(rel, str) and rel and not Path(rel).is_absolute() \
                and ".." not in Path(rel).parts:
            return Path(folder) / rel
    return Path(src["store"])


def _anchor_session(record: dict[str, str], step: str) -> str | None:
    """The session that made the latest outputs of `step`: the one that wrote its first
    output (STEP_OUTPUTS), which every successful run of it writes."""
    first = STEP_OUTPUTS[step][0][0]
    return record.get(f"tables/{first}") or record.get(f"figures/{first}")


def stale_outputs(root: Path, names: Iterable[str]) -> set[str]:
    """The tables and figures of `names` ("tables/<name>", "figures/<name>") that another
    run of their analysis wrote than the one that wrote its first output (STEP_OUTPUTS):
    left over from an earlier run with other setups or options. Outputs without a record
    are not called stale."""
    record = read_record(root)
    stale = set()
    for step, (patterns, _) in STEP_OUTPUTS.items():
        anchor = _anchor_session(record, step)
        if anchor is None:
            continue
        for name in (n for n in names if matches(n, patterns)):
            stale |= {k for k in (f"tables/{name}", f"figures/{name}") if record.get(k, anchor) != anchor}
    return stale


def _fill_group(g, arrays: dict[str, np.ndarray], attrs: dict[str, Any],
                dims: dict[str, tuple[str, ...]], coords: dict[str, np.ndarray]) -> None:
    from . import h5dims

    for path, values in coords.items():
        parent, _, name = path.rpartition("/")
        h5dims.add_coordinate(g.require_group(parent) if parent else g, name, values)
    for name, arr in arrays.items():
        ds = g.create_dataset(name, data=np.asarray(arr))
        if name in dims:
            h5dims.attach(ds, ds.parent, dims[name])
    for k, v in attrs.items():
        g.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)


# HDF5 dimension-scale bookkeeping: object references, whose bytes change when the file is
# rewritten; the scales themselves are datasets of the group and are hashed
SCALE_ATTRIBUTES = {"DIMENSION_LIST", "REFERENCE_LIST"}


def group_digest(path: Path, group: str) -> str | None:
    """sha256 of an analysis.h5 group's content (every dataset's name, type, shape and
    bytes, every attribute); None when the file or group cannot be read."""
    import h5py

    h = hashlib.sha256()

    def add(name: str, obj) -> None:
        h.update(name.encode())
        if isinstance(obj, h5py.Dataset):
            data = np.asarray(obj[()])
            content = (repr(data.tolist()).encode() if data.dtype.hasobject  # strings: not pointers
                       else np.ascontiguousarray(data).tobytes())
            h.update(f"{data.dtype.str}{data.shape}".encode() + content)
        for key in sorted(set(obj.attrs) - SCALE_ATTRIBUTES):
            h.update(key.encode() + repr(obj.attrs[key]).encode())

    try:
        with h5py.File(path, "r") as f:
            if group not in f:
                return None
            add(group, f[group])
            f[group].visititems(add)
    except Exception:  # noqa: BLE001  (missing or damaged: nothing to vouch for)
        return None
    return h.hexdigest()


def _readable_h5(path: Path) -> bool:
    """Whether the HDF5 file opens and all of its metadata (every group, dataset and
    attribute name) can be walked; data chunks are not read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: None)
        return True
    except Exception as e:  # noqa: BLE001  (h5py raises OSError, RuntimeError, KeyError, ...)
        if "unable to lock file" in str(e).lower():  # open for writing elsewhere, not damaged
            raise UserError(f"{path} is open for writing in another program (a notebook?); "
                            f"close it there and run the command again") from None
        return False


# The work lock is re-entrant within a process: flock is per open file description, so a
# second flock of the same file in the same process would wait for itself.
_HELD: dict[Path, list] = {}  # lock path -> [threading.RLock, depth, the held flock context]
_HELD_GUARD = threading.Lock()


@contextmanager
def work_lock(root: str | Path) -> Iterator[None]:
    """The exclusive lock of a work folder's outputs (<work>/analysis.h5.lock)."""
    path = (Path(root) / LOCK_NAME).resolve()  # one entry however the folder is spelled
    with _HELD_GUARD:
        entry = _HELD.setdefault(path, [threading.RLock(), 0, None])
    with entry[0]:
        if entry[1] == 0:
            held = art.file_lock(path)
            held.__enter__()
            entry[2] = held
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                entry[2].__exit__(None, None, None)
                entry[2] = None


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

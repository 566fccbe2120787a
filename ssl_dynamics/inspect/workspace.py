"""Where phase two reads and writes: the run directory (read only) and a work folder.

By default the work folder is `<run>/inspect`. A run directory on read-only media, or
someone else's archive, is analysed with `--work DIR` (or, when `<run>/inspect` cannot be
written, `./<run name>-inspect` in the current folder): the bank, the r_t store, the
representation cache, analysis.h5, tables, figures and the report all go there. What the
archive already holds (its bank, its r_t store) is read from the archive when the work
folder has none of its own, without ever writing to the archive or taking a lock in it.

A work folder belongs to one run: `<work>/work.json` records the run's identity (its
creation time, dataset checksum and label permutation checksum) when phase two first writes
there, and a work folder of another run is refused. So is an r_t store evaluated on another
dataset than the run's (another run's store, given with --store or found in the folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts as art
from ..errors import UserError

STORE_NAMES = ("rt.zarr", "rt.h5")  # the r_t store's default names, Zarr first
IDENTITY_FILE = "work.json"  # the run a work folder belongs to (written on first use)
# run.json fields that identify a run wherever it was copied: set once when it was made
IDENTITY_KEYS = ("created", "dataset_sha256", "random_labels_sha256")


@dataclass(frozen=True)
class Workspace:
    run: art.Run
    dir: Path  # every output of phase two goes here

    @property
    def archive(self) -> Path:
        """The run directory's own inspect folder (may equal `dir`, may be read-only)."""
        return self.run.paths.inspect

    @property
    def bank(self) -> Path:
        return self.dir / "bank.h5"

    @property
    def store(self) -> Path:
        return self.dir / "rt.zarr"

    @property
    def features(self) -> Path:
        return self.dir / "features.zarr"

    def existing_bank(self) -> Path | None:
        return _first_existing([self.bank, self.archive / "bank.h5"])

    def default_store(self) -> Path:
        """The store `inspect rt` fills when no --store is given: the work folder's own
        (rt.zarr, else rt.h5: the one the analyses read), else a new rt.zarr (which `inspect
        rt` starts from the archive's store when the work folder is not the archive)."""
        return _first_existing([self.dir / n for n in STORE_NAMES]) or self.store

    def store_for_reading(self, store: str | Path | None = None) -> Path:
        """The store the analyses read: `store` if given, else the work folder's, else the
        archive's; the work folder's default name when none exists (the reader says so).
        A store evaluated on another dataset than the run's is refused."""
        if store:
            path = Path(store)
        else:
            folders = [self.dir] + ([self.archive] if self.archive != self.dir else [])
            path = _first_existing([f / n for f in folders for n in STORE_NAMES]) or self.store
        if path.exists():
            from .rtdata import check_store_dataset

            check_store_dataset(path, self.run.dataset_sha256)
        return path

    def bind(self) -> None:
        """Record the run's identity in the work folder, unless it is recorded already
        (`open_workspace` refused a folder of another run)."""
        from .outputs import work_lock

        target = self.dir / IDENTITY_FILE
        with work_lock(self.dir):  # the lock under which killed writers' temp files are removed
            if not target.exists():
                art.write_json_atomic(target, {"run": run_identity(self.run),
                                               "run_dir": str(self.run.root.resolve())})


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def run_identity(run: art.Run) -> dict:
    """What makes a run this run, wherever its directory was copied to."""
    meta = {**run.meta, "dataset_sha256": run.dataset_sha256}
    return {k: meta.get(k) for k in IDENTITY_KEYS}


def check_identity(folder: Path, run: art.Run) -> None:
    """Refuse a work folder that holds the outputs of another run (read only)."""
    record = folder / IDENTITY_FILE
    if not record.exists():
        return
    doc = art.read_json(record, dict)
    theirs, mine = doc.get("run"), run_identity(run)
    if theirs != mine:
        other = doc.get("run_dir", "another run")
        created = theirs.get("created") if isinstance(theirs, dict) else None
        raise UserError(f"{folder} holds the phase-two outputs of another run ({other}, created "
                        f"{created}), not of {run.root} (created {mine['created']}); pass "
                        f"another --work folder")


# Work folders opened in this process and their workspaces: `Outputs`, which knows only the
# folder, records the run there on its first write (`bind_folder`).
_OPENED: dict[Path, Workspace] = {}


def bind_folder(folder: Path) -> None:
    """`Workspace.bind` for a work folder opened in this process (others are left alone)."""
    ws = _OPENED.get(Path(folder).resolve())
    if ws is not None:
        ws.bind()


def open_workspace(run_dir: str | Path, work: str | Path | None = None, echo=print) -> Workspace:
    """The run (validated) and a writable work folder; UserError if there is none, or if the
    folder belongs to another run. Nothing is written but the folder itself."""
    run = art.Run.open(run_dir)
    for name in run.paths.unconfigured():  # its seeds cannot be read without their settings
        echo(f"{run.paths.setup_dir(name)} has seed folders but no setup.json: {name} is "
             f"left out (`train run` with its settings restores the file)")
    ws = _choose_folder(run, work, echo)
    check_identity(ws.dir, ws.run)
    _OPENED[ws.dir.resolve()] = ws
    return ws


def _choose_folder(run: art.Run, work: str | Path | None, echo) -> Workspace:
    if work is not None:
        folder = Path(work)
        art.check_writable(folder)
        return Workspace(run, folder)
    default = run.paths.inspect
    if default.exists() and not default.is_dir():
        raise UserError(f"{default} is a file; phase two needs it to be a folder (or pass --work)")
    if art.is_writable(default):
        return Workspace(run, default)
    fallback = Path.cwd() / f"{run.root.resolve().name}-inspect"
    if not art.is_writable(fallback):
        raise UserError(f"neither {default} nor {fallback} can be written; pass --work DIR")
    echo(f"{run.root} is read-only: phase-two outputs go to {fallback} (--work chooses)")
    return Workspace(run, fallback)

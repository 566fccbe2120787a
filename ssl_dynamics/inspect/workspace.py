"""Where phase two reads and writes: the run directory (read only) and a work folder.

By default the work folder is `<run>/inspect`. A run directory on read-only media, or
someone else's archive, is analysed with `--work DIR` (or, when `<run>/inspect` cannot be
written, `./<run name>-inspect` in the current folder): the bank, the r_t store, the
representation cache, analysis.h5, tables, figures and the report all go there. What the
archive already holds (its bank, its r_t store) is read from the archive when the work
folder has none of its own, without ever writing to the archive or taking a lock in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import artifacts as art
from ..errors import UserError

STORE_NAMES = ("rt.zarr", "rt.h5")  # the r_t store's default names, Zarr first


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

    def store_for_reading(self, store: str | Path | None = None) -> Path:
        """The store the analyses read: `store` if given, else the work folder's, else the
        archive's; the work folder's default name when none exists (the reader says so)."""
        if store:
            return Path(store)
        folders = [self.dir] + ([self.archive] if self.archive != self.dir else [])
        return _first_existing([f / n for f in folders for n in STORE_NAMES]) or self.store


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def open_workspace(run_dir: str | Path, work: str | Path | None = None, echo=print) -> Workspace:
    """The run (validated) and a writable work folder; UserError if there is none."""
    run = art.Run.open(run_dir)
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

"""Atomic file writes, checksums and the one reader of JSON files.

Every write goes to a temporary file in the same folder, is fsynced, then renamed over
the target, so a kill leaves either the old file or the new one, never a partial one.
Temporary files are named `.<target>.<random>.tmp`; `remove_stale_temps` deletes the ones
a killed writer left behind.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it
# errno values that mean "the disk (or the quota, or a file-size limit) is full"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename over target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(folder: str | Path, pattern: str = ".*.tmp") -> int:
    """Delete temporary files a killed writer left behind (one writer per folder)."""
    folder = Path(folder)
    removed = 0
    for tmp in folder.glob(pattern) if folder.is_dir() else []:
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | Path, obj: Any) -> None:
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path, kind: type | None = None) -> Any:
    """Parse a JSON file; a corrupt one (or, with `kind`, one of another type) is a UserError."""
    try:
        obj = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"corrupt JSON file {path}: {e.msg}: line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise UserError(f"corrupt JSON file {path}: not text") from None
    if kind is not None and not isinstance(obj, kind):
        raise UserError(f"corrupt JSON file {path}: expected a JSON {_json_name(kind)}, "
                        f"found {type(obj).__name__}")
    return obj


def _json_name(kind: type) -> str:
    return {dict: "object", list: "array"}.get(kind, kind.__name__)


def sha256_bytes(data) -> str:
    """The sha256 of bytes, or of a uint8 tensor's memory (read in place)."""
    return hashlib.sha256(data.numpy() if hasattr(data, "numpy") else data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_no_space(exc: BaseException) -> bool:
    """True for the OSErrors a full disk, a full quota or a file-size limit raise."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def broken_link(path: str | Path) -> str | None:
    """'<link> is a broken symbolic link (to <target>)' for the first part of `path` that is a
    link to nothing (or a loop), where mkdir would only say "File exists"; None if none is."""
    path = Path(os.path.abspath(path))
    for part in (path, *path.parents):
        if part.is_symlink() and not part.exists():
            return f"{part} is a broken symbolic link (to {os.readlink(part)})"
    return None


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and prove that files can be made in it; UserError if not."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder")
    if (link := broken_link(folder)) is not None:
        raise UserError(f"cannot create files in {folder}: {link}")
    try:
        first_new = _first_missing(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if first_new is not None:
            _CREATED.append(first_new)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:  # read-only, no permission, or a pseudo-filesystem (/proc)
        raise UserError(f"cannot create files in {folder} ({e.strerror})") from None


# Folders `check_writable` created in this process: a command refused after choosing its
# output folder leaves none behind (`remove_unused_folders`, called as each command ends).
_CREATED: list[Path] = []


def _first_missing(folder: Path) -> Path | None:
    """The outermost of `folder` and its parents that does not exist yet (mkdir creates it)."""
    missing = None
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            break
        missing = p
    return missing


def remove_unused_folders(since: int = 0) -> None:
    """Remove the folders `check_writable` created in this process (those recorded after the
    first `since`) that hold no file, their empty subfolders with them. A folder with any
    file in it, at any depth, is kept whole, and rmdir refuses a folder that is not empty,
    so nothing written is ever removed."""
    while len(_CREATED) > since:
        top = _CREATED.pop()
        if not top.is_dir() or top.is_symlink() or any(not p.is_dir() for p in top.rglob("*")):
            continue
        for sub in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first
            _rmdir_quietly(sub)
        _rmdir_quietly(top)


def created_folders() -> int:
    """How many folders `check_writable` has created in this process so far (a mark for
    `remove_unused_folders`)."""
    return len(_CREATED)


def _rmdir_quietly(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # written to meanwhile, or gone already: keep it
        pass


def is_writable(folder: Path) -> bool:
    try:
        check_writable(folder)
        return True
    except UserError:
        return False


@contextmanager
def file_lock(path: str | Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive `flock` on `path` (created if needed) for the duration of the block.

    The kernel releases it when the holder dies, so a killed worker never holds it for
    good. Yields True when held; with blocking=False yields False at once when another
    process holds it. Needs a filesystem with working flock (local disks, NFSv4, Lustre
    mounted with -o flock, GPFS).
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as e:
            raise UserError(f"cannot lock {path}: {e.strerror} (the filesystem must support "
                            f"flock)") from None
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def new_folder(parent: str | Path, suffix: str = "") -> Path:
    """Create and return `<parent>/<UTC time><suffix>`, numbered when that name is taken."""
    import datetime as _dt

    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in range(1000):  # a handful of same-second calls at most; 1000 is only a bound
        folder = parent / f"{stamp}{'' if n == 0 else f'.{n}'}{suffix}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise OSError(f"cannot create a new folder in {parent}")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_space(folder: str | Path, need: int, what: str, hint: str = "") -> None:
    """UserError when `folder`'s filesystem has less than `need` bytes free."""
    import shutil

    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(f"not enough disk space in {folder} for {what}: need {format_bytes(need)}, "
                        f"have {format_bytes(free)}{hint}")


@contextmanager
def h5_atomic(target: str | Path, update: bool = False) -> Iterator[Any]:
    """An HDF5 file built in memory and written atomically when the block ends.

    With `update`, it starts as a copy of the existing target. Building in memory means a
    full disk fails our own write (one OSError, the old file kept) instead of the HDF5
    library's, which can crash the process when a write fails mid-file.
    """
    import io

    import h5py

    target = Path(target)
    buf = io.BytesIO(target.read_bytes() if update and target.exists() else b"")
    with h5py.File(buf, "a" if buf.getbuffer().nbytes else "w") as f:
        yield f
    write_bytes_atomic(target, buf.getvalue())

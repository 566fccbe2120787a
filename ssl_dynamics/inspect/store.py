"""The r_t store: correctness and true-class probability of every checkpoint on the bank.

Layout (one group per setup, chunked per checkpoint so that shards never share a chunk):

    <store>/probe_indices [K], labels [K]
    <store>/<setup>/correct  uint8   [S, E, M, K, V]   1 = classified correctly
    <store>/<setup>/p_true   float32 [S, E, M, K, V]   softmax probability of the true class
    <store>/<setup>/done     uint8   [S, E]            1 = that checkpoint is evaluated
    <store>/<setup>/sha256   uint8   [S, E, 32]        sha256 of the checkpoint evaluated there
                                                       (its manifest's; zeros = not recorded)
    <store>/<setup>/targets  int64   [K]               labels scored against (permuted for
                                                       random-label setups)
    <store>/<setup>/{seed,epoch,replay,probe,view,label}   coordinates (see storedims.py)
    attrs: schema_version, seeds, epochs, setup config, bank fingerprint, dataset sha256,
           simclr_batch, precision (fp32 | bf16: one store never mixes them)

S indexes the run's seeds (in the order they were added: `attrs.seeds`), E the epochs
0..t_max, M the replays, V the views (2 for SimCLR, else 1). `done` is written after the
data of its chunk, so an interrupted evaluation is redone, never half-read. Seeds added to
a run later grow the S axis; evaluated chunks stay as they are. A checkpoint replaced after
it was evaluated (retrained) no longer matches its recorded sha256 and is evaluated again
(`rt_plan.pending_tasks`); stores written before the record existed are trusted as they are.

Structure is committed by attributes written last: the root's `bank_fingerprint` binds the
store to its bank, a setup group's `COMMIT_ATTRS` make it. A root or setup group without
them was cut short (a kill) while being made: readers skip it, and a writer removes and
remakes it under the store's lock (never a group whose attributes committed it).

The working format is Zarr: every chunk is its own file, so processes evaluating disjoint
checkpoints (`--shard i/n`) can share one store; structure changes happen under a lock
beside the store. Reading never needs that lock (a finished store on read-only media opens
fine). Every array carries named dimensions and each setup group its coordinates, so
`xr.open_zarr(store, group=setup)` gives a labelled Dataset; stores made before that are
upgraded when opened for writing (`storedims.py`).

A path ending in `.h5` asks for an HDF5 archive: the work happens in a Zarr store
beside it (`<name>.h5.work.zarr`, kept for resuming) and each finished `inspect rt` exports
the whole archive atomically. An archive whose work store is gone seeds a new one first
(`rtdata.seed_work_store`), so that evaluating more adds to the archive, never replaces it.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import artifacts as art
from ..config import SCHEMA_VERSION, canonical_json, canonical_order, check_schema, upgrade_setup_dict
from ..errors import UserError
from . import storedims as dims

ARRAYS = ("correct", "p_true")
# Chunk reads zarr keeps in flight when a whole array is read: 64 (the default of later zarr
# releases; 3.1.6 has 10) read a store of per-checkpoint chunks 1.3x faster on a 2-core VM.
# zarr's config is process-wide: it is set around each whole-array read only.
READ_CONCURRENCY = 64
CHECKSUM = True  # zstd frame checksums: a damaged chunk is an error, not silent garbage
# setup attributes that stores written before they existed lack: unknown there, so accepted
# (and left unrecorded: the chunks already written may have been made either way)
UNRECORDED_BEFORE = ("precision",)
ROOT_ARRAYS = ("probe_indices", "labels")  # made by init_probes before it binds the bank
# What damaged metadata raises (garbage JSON, a zarr.json zarr refuses, malformed attributes,
# a missing array) where the store also writes: an OSError there (a full disk) is not damage
DAMAGE = (ValueError, KeyError, TypeError)


@contextmanager
def reading(path: Path, what: str, kinds: tuple[type[Exception], ...] = (Exception,),
            kind: str = "store") -> Iterator[None]:
    """Damaged metadata or chunks of an r_t store (or .h5 archive: `kind`) as one line naming
    it, instead of zarr's or h5py's traceback; `kinds`: what counts as damage there."""
    try:
        yield
    except UserError:
        raise
    except kinds as e:  # zarr, h5py, json and numpy raise many kinds
        detail = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"corrupt r_t {kind} {path}: {what} cannot be read ({type(e).__name__}"
                        f"{': ' + detail if detail else ''}); rerun `inspect rt` into a new "
                        f"--store") from None


def is_work_store(path: Path) -> bool:
    """An r_t Zarr store (bound to a bank), or one whose creation was cut short (its root
    holds at most the probe arrays); False for any other folder or file."""
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        return "bank_fingerprint" in root.attrs or set(root.keys()) <= set(ROOT_ARRAYS)
    except Exception:  # noqa: BLE001  (not a Zarr group at all: a file, another format)
        return False


def sha_bytes(sha256: str | None) -> np.ndarray | None:
    """A hex sha256 as the 32 bytes the store records; None for anything else (unknown)."""
    try:
        raw = bytes.fromhex(sha256 or "")
    except ValueError:
        return None
    return np.frombuffer(raw, dtype=np.uint8) if len(raw) == dims.SHA_BYTES else None


def sha_hex(record: np.ndarray) -> str:
    """The hex sha256 of one recorded checkpoint; "" when none was recorded (all zeros)."""
    return bytes(record).hex() if record.any() else ""


def other_precision(path: Path, setup: str, have: str) -> UserError:
    """The refusal of results in another precision than the setup's stored ones."""
    return UserError(f"{path}/{setup} was evaluated in {have}; use the same --precision ({have}) "
                     f"or another --store path")


def work_path(path: str | Path) -> Path:
    """The Zarr store that evaluation writes for a requested store path."""
    path = Path(path)
    if path.suffix == ".zarr":
        return path
    if path.suffix in (".h5", ".hdf5"):
        return path.with_name(path.name + ".work.zarr")
    raise UserError(f"store path {path} must end in .zarr or .h5")


def _compressor():
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=0, checksum=CHECKSUM)


def _index_name(name: str) -> bool:
    """Whether a file name is a chunk index as zarr writes one: ASCII digits, no leading 0
    (not "02", "²" or a `.partial` file)."""
    return name.isascii() and name.isdigit() and str(int(name)) == name


def decode_chunk(array, content: bytes) -> np.ndarray:
    """The values held by the bytes of one chunk file of `array` (chunks of one checkpoint,
    [1, 1, ...]), decoded with the array's own codecs in memory (no second read from disk,
    where the file may have changed since)."""
    import json

    import zarr
    from zarr.core.buffer import cpu
    from zarr.storage import MemoryStore

    meta = dict(array.metadata.to_dict())
    meta["shape"] = [1, 1, *array.shape[2:]]
    key = array.metadata.encode_chunk_key((0,) * array.ndim)
    one = MemoryStore({"zarr.json": cpu.Buffer.from_bytes(json.dumps(meta).encode()),
                       key: cpu.Buffer.from_bytes(content)})
    return zarr.open_array(one, mode="r")[0, 0]


def always_written(group, name: str):
    """Array `name` of `group`, set to write every chunk, even one that equals its fill
    value: zarr 3 skips such a chunk (and deletes an old one), and a p_true chunk's file is
    what proves a checkpoint was evaluated (`RtStore._lost`), NaN values included (e.g. a
    network whose logits overflow)."""
    array = group[name]
    if hasattr(array, "with_config"):  # zarr 3.1.6 and later
        return array.with_config({"write_empty_chunks": True})
    import dataclasses

    from zarr import Array
    from zarr.core.array import AsyncArray

    inner = array._async_array  # earlier 3.x: the same array rebuilt with the runtime config
    config = getattr(inner, "config", None) or inner._config
    return Array(AsyncArray(inner.metadata, inner.store_path,
                            dataclasses.replace(config, write_empty_chunks=True)))


class RtStore:
    def __init__(self, path: str | Path, writable: bool = True):
        self.path = work_path(path)
        self.writable = writable
        self._arrays: dict[str, tuple] = {}  # setup -> (correct, p_true, done) handles for write
        if writable:
            # under the lock: open_group(mode="a") creates a store it does not find, so two
            # processes starting on a new store (shards) could both decide to create it, and
            # the later one fails ("a group exists"); locked, one creates and the rest open
            with self._lock():
                self.group = self._open()
            self.upgrade()
        else:
            self.group = self._open()

    def _open(self):
        """(Re)read the group: metadata is cached per handle, and other shards may have written."""
        import zarr

        if not self.writable and not self.path.exists():
            raise UserError(f"no r_t store at {self.path}: run `inspect rt` first")
        try:
            # never the consolidated copy: it is stale between a resize and the next consolidation
            group = zarr.open_group(str(self.path), mode="a" if self.writable else "r",
                                    use_consolidated=False)
        except Exception as e:
            raise UserError(f"cannot open r_t store {self.path}: {e}") from None
        # neither read nor extended: a newer layout may mean other things by the same arrays
        check_schema(group.attrs.get("schema_version"), f"r_t store {self.path}")
        return group

    @property
    def group(self):
        return self._group

    @group.setter
    def group(self, group) -> None:
        # a re-read group may have new or resized arrays: handles opened before are stale
        self._group, self._arrays = group, {}

    def _lock(self):
        return art.file_lock(self.path.with_name(self.path.name + ".lock"))

    def _reading(self, what: str, kinds: tuple[type[Exception], ...] = (Exception,)):
        return reading(self.path, what, kinds)

    def upgrade(self) -> bool:
        """Name the dimensions and add the coordinates of a store made before they existed,
        repair what a kill cut short (an unfinished setup group is removed, a half-grown seed
        axis is put back in line with the committed attributes), and refresh its consolidated
        metadata; returns True when anything changed. Evaluated chunks and done flags of
        committed checkpoints are left exactly as they are."""
        with self._reading("its metadata", DAMAGE):
            if not dims.needs_upgrade(self.path):
                return False
            with self._lock():
                if not dims.needs_upgrade(self.path):  # another process did it meanwhile
                    return False
                dims.name_dimensions(self.path)
                self.group = self._open()
                for setup in self._unfinished():
                    del self.group[setup]
                if self.bound():
                    idx, labels = self.probes()
                    for setup in self.setups():
                        attrs = self.attrs(setup)
                        values = dims.coordinate_values(attrs, idx, labels)
                        dims.write_coordinates(self.group[setup], values)
                        dims.fit_to_attrs(self.group[setup], attrs, values)
                dims.consolidate(self.path)
                self.group = self._open()
        return True

    def consolidate(self) -> None:
        """Refresh the consolidated metadata that xarray reads (under the store's lock)."""
        with self._lock():
            dims.consolidate(self.path)

    def init_probes(self, probe_indices: np.ndarray, labels: np.ndarray, bank_fingerprint: str,
                    bank_spec: dict[str, int] | None = None) -> None:
        """Bind the store to its bank (fingerprint, and the settings it was built with, which
        let a later run refuse a different bank before building it), or check the binding.
        The root's attributes are written last: they bind it, so probe arrays found without
        them are what a killed binding left, and are made again."""
        with self._lock():
            g = self.group = self._open()
            if self.bound():
                if g.attrs.get("bank_fingerprint") != bank_fingerprint:
                    raise UserError(f"{self.path} was made from a different bank; use another "
                                    f"--store path (or the bank it was made with)")
                if bank_spec is not None and "bank_spec" not in g.attrs:  # made before it was recorded
                    g.attrs["bank_spec"] = dict(bank_spec)
                return
            with self._reading("its root"):
                setups = list(g.group_keys())
            if setups:  # setups are made only in a bound store: its root attributes were lost
                raise UserError(f"corrupt r_t store {self.path}: it has setups ({', '.join(setups)}) "
                                f"but no bank fingerprint; rerun `inspect rt` into a new --store")
            for name in ROOT_ARRAYS:
                if name in g:
                    del g[name]
            g.create_array("probe_indices", data=np.asarray(probe_indices, dtype=np.int64),
                           **dims.array_options("probe_indices"))
            g.create_array("labels", data=np.asarray(labels, dtype=np.int64),
                           **dims.array_options("labels"))
            # store_id: a new one each time a store is bound to its bank, so a store deleted and
            # evaluated again (another precision, a fixed evaluator) is not taken for the old one
            # one write of zarr.json (zarr's attrs.update writes once per key: a kill between
            # would leave a store bound to its bank without its id or bank spec)
            g.update_attributes({"schema_version": SCHEMA_VERSION, "bank_fingerprint": bank_fingerprint,
                                 "store_id": uuid.uuid4().hex,
                                 **({"bank_spec": dict(bank_spec)} if bank_spec is not None else {})})
            dims.consolidate(self.path)

    def bound(self) -> bool:
        """Whether the store is bound to its bank (init_probes finished)."""
        return "bank_fingerprint" in self.root_attrs()

    def _unfinished(self, only: str | None = None) -> list[str]:
        """Setup groups without their committing attributes: cut short while being made."""
        with self._reading("its setup groups"):
            return [name for name, g in self.group.groups()
                    if (only is None or name == only) and not dims.committed(g.attrs)]

    def ensure_setup(self, setup: str, seeds: list[int], n_epochs: int, m: int, k: int, v: int,
                     targets: np.ndarray, attrs: dict[str, Any]) -> list[int]:
        """Create the setup's arrays, or check that existing ones were made the same way and
        grow their seed axis by the run's new seeds. Returns the store's seed order."""
        want = {"epochs": list(range(n_epochs)), **attrs}
        with self._lock():
            self.group = self._open()
            for name in self._unfinished(only=setup):  # a kill while it was made: make it again
                del self.group[name]
            if setup not in self.group:
                self._create(setup, [int(s) for s in seeds], n_epochs, (m, k, v), targets, want)
                return [int(s) for s in seeds]
            have = self.attrs(setup)
            lacking = [key for key in want if key not in have and key not in UNRECORDED_BEFORE]
            if lacking and self._nothing_evaluated(setup):
                # committed by an older version that wrote its attributes one key at a time and
                # was killed in between: nothing was evaluated into it, so it is made again
                del self.group[setup]
                self._create(setup, [int(s) for s in seeds], n_epochs, (m, k, v), targets, want)
                return [int(s) for s in seeds]
            if lacking:
                raise UserError(f"{self.path}/{setup} lacks {', '.join(lacking)} among its attributes "
                                f"(an interrupted write of an older version), so its evaluations "
                                f"cannot be matched to these settings; delete {self.path}/{setup} "
                                f"to evaluate it again, or use another --store")
            # a stored config is read in today's terms (schema-1 "none" is today's "normalize")
            have["setup_config"] = upgrade_setup_dict(have.get("setup_config"), have.get("schema_version", 1))
            diffs = [key for key in want if canonical_json(have.get(key)) != canonical_json(want[key])
                     and not (key in UNRECORDED_BEFORE and key not in have)]
            if list(have.get("shape", [])[2:]) != [m, k, v]:
                diffs.append("shape")
            if diffs == ["precision"]:
                raise other_precision(self.path, setup, have["precision"])
            if diffs:
                what = "bank" if "bank_fingerprint" in diffs else ", ".join(diffs)
                raise UserError(f"{self.path}/{setup} was made with a different {what}; "
                                f"use another --store path")
            with self._reading(f"the arrays of {setup}", DAMAGE):  # a damaged one, before growing
                for name in (*ARRAYS, "done", "targets"):
                    _ = self.group[setup][name]  # opening an array reads (checks) its metadata
            self._add_record(setup)
            return self._grow(setup, have, seeds)

    def _nothing_evaluated(self, setup: str) -> bool:
        """Whether no checkpoint of the setup was evaluated into the store (`done` all 0)."""
        return not self._done_flags(setup).any()

    def restore_setup(self, setup: str, attrs: dict[str, Any], arrays: dict[str, np.ndarray],
                      sha256: np.ndarray | None = None) -> None:
        """Make a setup as an exported archive holds it: its attributes and every array
        (`sha256`: the archive's checkpoint record, None for one made before it existed).
        The setup config is stored in today's terms, as the schema version now stamped on it
        says (a schema-1 "none" becomes "normalize", which is what it meant)."""
        with self._lock():
            self.group = self._open()
            want = {k: v for k, v in attrs.items() if k not in ("schema_version", "seeds", "shape")}
            if "setup_config" in want:
                want["setup_config"] = upgrade_setup_dict(want["setup_config"],
                                                          attrs.get("schema_version", 1))
            shape = arrays["correct"].shape
            for name in self._unfinished(only=setup):
                del self.group[name]
            self._create(setup, [int(s) for s in attrs["seeds"]], shape[1], tuple(shape[2:]),
                         arrays["targets"], want, data={**arrays, dims.SHA_ARRAY: sha256})

    def _create(self, setup, seeds, n_epochs, mkv, targets, want, data=None) -> None:
        """Make a setup group: arrays (filled from `data` when given), coordinates, then the
        attributes, last: they commit the group (a kill before them leaves it unfinished)."""
        g = self.group.create_group(setup)
        shape = [len(seeds), n_epochs, *mkv]
        chunk = (1, 1, *mkv)
        # no _FillValue attribute: xarray would mask with it; zarr's fill values are the contract
        g.create_array("correct", shape=shape, chunks=chunk, dtype="uint8", fill_value=0,
                       compressors=_compressor(), **dims.array_options("correct"))
        g.create_array("p_true", shape=shape, chunks=chunk, dtype="float32", fill_value=np.nan,
                       compressors=_compressor(), **dims.array_options("p_true"))
        g.create_array("done", shape=(len(seeds), n_epochs), chunks=(1, 1), dtype="uint8",
                       fill_value=0, **dims.array_options("done"))
        self._record_array(g, shape)
        g.create_array("targets", data=np.asarray(targets, dtype=np.int64),
                       **dims.array_options("targets"))
        for name, values in (data or {}).items():
            if name in dims.SEED_GROWN and values is not None:
                (always_written(g, name) if name == "p_true" else g[name])[...] = values
        attrs = {"schema_version": SCHEMA_VERSION, "seeds": seeds, "shape": shape, **want}
        idx, labels = self.probes()
        dims.write_coordinates(g, dims.coordinate_values(attrs, idx, labels))
        g.update_attributes(attrs)  # last, in ONE write of zarr.json: commits the group
        dims.consolidate(self.path)

    @staticmethod
    def _record_array(g, shape: list[int]) -> None:
        """The checkpoint record: one chunk per checkpoint, like `done`, so shards never
        share one."""
        g.create_array(dims.SHA_ARRAY, shape=(*shape[:2], dims.SHA_BYTES), chunks=(1, 1, dims.SHA_BYTES),
                       dtype="uint8", fill_value=0, **dims.array_options(dims.SHA_ARRAY))

    def _add_record(self, setup: str) -> None:
        """Give a setup made before checkpoints were recorded its (empty) record, so that the
        checkpoints evaluated from now on are recorded; what it holds stays trusted."""
        g = self.group[setup]
        if dims.SHA_ARRAY not in g:
            self._record_array(g, self.attrs(setup)["shape"])
            dims.consolidate(self.path)

    def _grow(self, setup: str, have: dict, seeds: list[int]) -> list[int]:
        """Append the run's seeds that the store lacks (existing chunks are kept). Arrays and
        the seed coordinate first, the attributes last: they commit the new seeds, and a kill
        before them is undone on the next open for writing (`upgrade`)."""
        order = [int(s) for s in have["seeds"]]
        gone = [s for s in order if s not in seeds]
        if gone:
            raise UserError(f"{self.path}/{setup} has seeds {gone} that the run does not list")
        new = [int(s) for s in seeds if int(s) not in order]
        if new:
            g = self.group[setup]
            order += new
            shape = [len(order), *have["shape"][1:]]
            for name in ARRAYS:
                g[name].resize(tuple(shape))
            g["done"].resize((len(order), shape[1]))
            g[dims.SHA_ARRAY].resize((len(order), shape[1], dims.SHA_BYTES))
            dims.write_seed_coordinate(g, order)
            g.update_attributes({"seeds": order, "shape": shape})  # last, one write: commits the seeds
            dims.consolidate(self.path)
        return order

    def forget(self, setup: str, s: int, e: int) -> None:
        """Mark a checkpoint as not evaluated (it is about to be evaluated again): a kill
        while its chunk is rewritten then leaves it pending, never half-old, half-new."""
        self.group[f"{setup}/done"][s, e] = 0

    def setups(self) -> list[str]:
        """The committed setup groups (one cut short while being made is not a setup)."""
        with self._reading("its setup groups"):
            return canonical_order(name for name, g in self.group.groups() if dims.committed(g.attrs))

    def root_attrs(self) -> dict[str, Any]:
        with self._reading("its root attributes"):
            return dict(self.group.attrs)

    def attrs(self, setup: str) -> dict[str, Any]:
        """A setup group's attributes; one written under a newer schema (a newer toolkit
        adds setups to an older store) is refused, as the store's root is in `_open`."""
        with self._reading(f"the attributes of {setup}"):
            attrs = dict(self.group[setup].attrs)
        check_schema(attrs.get("schema_version"), f"r_t store {self.path}/{setup}")
        return attrs

    def done(self, setup: str) -> np.ndarray:
        """bool [S, E]: the checkpoints evaluated into the store, whose chunk is on disk."""
        flags = self._done_flags(setup)
        return flags & ~self._lost(setup, flags)

    def _done_flags(self, setup: str) -> np.ndarray:
        """bool [S, E]: the `done` array as stored. Zarr reads it one (1, 1) chunk at a time
        (0.35 ms each on cpu-2: 8 s for the thesis grid's 23,220 checkpoints); since a chunk
        equal to the fill value 0 is never written, the chunk files themselves say which are
        set, and each distinct file content is decoded once, from the bytes read (a file
        another process removes meanwhile, forgetting its checkpoint, is a 0, as zarr reads
        a missing chunk)."""
        with self._reading(f"{setup}/done"):
            arr = self.group[f"{setup}/done"]
            files = self._checkpoint_chunks(setup, "done", arr)
            if files is None:  # another chunk layout: read it whole
                return arr[:].astype(bool)
            flags = np.zeros(arr.shape, dtype=bool)
            by_content: dict[bytes, list[tuple[int, int]]] = {}
            for cell, path in files.items():
                try:
                    with open(path, "rb") as f:
                        by_content.setdefault(f.read(), []).append(cell)
                except FileNotFoundError:  # forgotten since the listing
                    continue
            for content, cells in by_content.items():
                if decode_chunk(arr, content):  # one decode for every file of these bytes
                    flags[tuple(np.array(cells).T)] = True
            return flags

    def _lost(self, setup: str, flags: np.ndarray) -> np.ndarray:
        """bool [S, E]: checkpoints marked evaluated whose p_true chunk file is gone (deleted,
        or lost in a copy). Zarr reads a missing chunk as its fill value, so such a checkpoint
        would pass for evaluated with every answer wrong; it is evaluated again instead.
        (p_true always has a chunk: `always_written`; `correct`, all-wrong, may rightly have
        none: zarr does not write a chunk that equals its fill value.)"""
        with self._reading(f"{setup}/p_true"):
            arr = self.group[f"{setup}/p_true"]
            files = self._checkpoint_chunks(setup, "p_true", arr)
        if files is None:  # not one chunk per checkpoint: `done` is trusted
            return np.zeros_like(flags)
        present = np.zeros_like(flags)
        for s, e in files:
            present[s, e] = True
        return flags & ~present

    def _checkpoint_chunks(self, setup: str, name: str, arr) -> dict[tuple[int, int], str] | None:
        """(seed row, epoch) -> chunk file of array `name` whose chunks hold one checkpoint
        each, under zarr 3's default keys (c/<s>/<e>/0/...): one listing per seed folder, not
        one look-up per chunk; files beyond the array's shape (a store cut short) are not its
        chunks. None for any other layout (sharded, other chunks or keys)."""
        tail = (0,) * (arr.ndim - 2)
        if getattr(arr, "shards", None) is not None or tuple(arr.chunks[:2]) != (1, 1) or \
                arr.metadata.encode_chunk_key((1, 2, *tail)) != "/".join(map(str, ("c", 1, 2, *tail))):
            return None
        rows, out = self.path / setup / name / "c", {}
        try:
            for seed_dir in os.scandir(rows) if rows.is_dir() else ():
                if not (_index_name(seed_dir.name) and int(seed_dir.name) < arr.shape[0] and seed_dir.is_dir()):
                    continue
                for epoch_dir in os.scandir(seed_dir.path):
                    leaf = os.path.join(epoch_dir.path, *map(str, tail))
                    if _index_name(epoch_dir.name) and int(epoch_dir.name) < arr.shape[1] and os.path.isfile(leaf):
                        out[int(seed_dir.name), int(epoch_dir.name)] = leaf
        except OSError as e:  # a stray file where a chunk folder belongs, no permission
            raise UserError(f"corrupt r_t store {self.path}: the chunks of {setup}/{name} cannot be "
                            f"listed ({e.strerror or type(e).__name__})") from None
        return out

    def checkpoint_sha(self, setup: str) -> np.ndarray | None:
        """uint8 [S, E, 32]: the sha256 of the checkpoint each chunk was evaluated from (zeros:
        not recorded); None for a store made before checkpoints were recorded. Read from the
        chunk files, as `_done_flags` reads `done` (zarr reads one (1, 1, 32) chunk at a time:
        4 s for the thesis grid on cpu-2, `benchmarks/store_done.py`)."""
        with self._reading(f"{setup}/{dims.SHA_ARRAY}"):
            g = self.group[setup]
            if dims.SHA_ARRAY not in g:
                return None
            arr = g[dims.SHA_ARRAY]
            fast = self._records_from_files(setup, arr)
            return arr[:] if fast is None else fast

    def _records_from_files(self, setup: str, arr) -> np.ndarray | None:
        """The sha256 record decoded from its chunk files (a file missing is zeros, as zarr
        reads it); None when the array is not stored as this toolkit writes it (one
        zstd-compressed chunk per checkpoint) or a chunk does not decode to its 32 bytes,
        for zarr to read."""
        codecs = [c.get("name") for c in arr.metadata.to_dict().get("codecs", [])]
        if codecs != ["bytes", "zstd"] or arr.dtype != np.uint8 or tuple(arr.chunks[2:]) != tuple(arr.shape[2:]):
            return None
        try:
            from numcodecs import Zstd  # zarr's own zstd codec
        except ImportError:
            return None
        files = self._checkpoint_chunks(setup, dims.SHA_ARRAY, arr)
        if files is None:
            return None
        zstd, width = Zstd(), int(np.prod(arr.shape[2:]))
        out = np.zeros(arr.shape, dtype=np.uint8)
        for (s, e), path in files.items():
            try:
                with open(path, "rb") as f:
                    raw = zstd.decode(f.read())
            except FileNotFoundError:  # forgotten since the listing
                continue
            except Exception:  # noqa: BLE001 - not zstd as we write it: zarr reads (and judges) it
                return None
            if len(raw) != width:
                return None
            out[s, e] = np.frombuffer(raw, dtype=np.uint8).reshape(arr.shape[2:])
        return out

    def write(self, setup: str, s: int, e: int, correct: np.ndarray, p_true: np.ndarray,
              sha256: str | None = None) -> None:
        """One checkpoint's chunk; `sha256` (its manifest's) is recorded with it."""
        if setup not in self._arrays:  # opening an array reads its metadata: a third of a write
            g = self.group[setup]
            record = g[dims.SHA_ARRAY] if dims.SHA_ARRAY in g else None
            self._arrays[setup] = (g["correct"], always_written(g, "p_true"), g["done"], record)
        c, p, done, record = self._arrays[setup]
        c[s, e] = correct.astype(np.uint8)
        p[s, e] = p_true.astype(np.float32)
        if record is not None and (digest := sha_bytes(sha256)) is not None:
            record[s, e] = digest
        done[s, e] = 1  # last: it commits the chunk

    def read(self, setup: str) -> dict[str, np.ndarray]:
        import zarr

        g = self.group[setup]
        out = {}
        # `done` first: a shard writes a chunk before its flag, so a flag read first never
        # stands for a chunk not yet written (the other order could pair a fresh flag with
        # the fill values read a moment before)
        out["done"] = self._done_flags(setup).astype(np.uint8)
        for name in ("correct", "p_true", "targets"):
            try:
                with zarr.config.set({"async.concurrency": READ_CONCURRENCY}):
                    out[name] = g[name][:]
            except MemoryError:
                raise
            except Exception as e:  # a truncated or altered chunk: zstd or the checksum fails
                raise UserError(f"corrupt r_t store {self.path}: {setup}/{name} cannot be read "
                                f"({type(e).__name__}){self._damaged_chunks(setup, name)}") from None
        lost = self._lost(setup, out["done"].astype(bool))
        out["done"] = np.where(lost, 0, out["done"]).astype(out["done"].dtype)  # not evaluated
        return out

    def _damaged_chunks(self, setup: str, name: str) -> str:
        """How to mend `setup/name` when it cannot be read: which checkpoints' chunks are
        damaged, found by decoding each chunk file alone (only after a failed read: one
        decode per checkpoint), and that deleting their p_true and correct chunks makes
        `inspect rt` evaluate them again (a checkpoint without its p_true chunk counts as not
        evaluated: `_lost`). Else: a new store."""
        anew = "; rerun `inspect rt` into a new --store"
        try:
            arr = self.group[f"{setup}/{name}"]
            files = self._checkpoint_chunks(setup, name, arr)
            seeds = self.attrs(setup).get("seeds")
        except Exception:  # noqa: BLE001  (the error being reported stands on its own)
            return anew
        if files is None or not isinstance(seeds, list):
            return anew
        bad = []
        for (s, e), f in sorted(files.items()):
            try:
                with open(f, "rb") as fh:
                    decode_chunk(arr, fh.read())
            except Exception:  # noqa: BLE001  (zstd, the checksum or the shape fails)
                bad.append((s, e))
        if not bad:
            return anew
        shown = bad[:8]  # a line, not a listing: the rest are found again after these are mended
        where = ", ".join(f"seed {seeds[s] if s < len(seeds) else s} (row {s}) epoch {e}" for s, e in shown) + \
            (f" and {len(bad) - len(shown)} more" if len(bad) > len(shown) else "")
        keys = " ".join(f"{setup}/{{p_true,correct}}/c/{s}/{e}" for s, e in shown)
        return (f": the chunk of {where} is damaged; delete those checkpoints' chunk folders of "
                f"p_true and correct ({keys}) and `inspect rt` evaluates them again, or rerun "
                f"`inspect rt` into a new --store")

    def read_targets(self, setup: str) -> np.ndarray:
        with self._reading(f"{setup}/targets"):
            return self.group[f"{setup}/targets"][:]

    def probes(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.bound():
            raise UserError(f"r_t store {self.path} is unfinished (no bank bound to it yet: "
                            f"`inspect rt` was stopped while making it); run `inspect rt` again")
        with self._reading("its probe set"):
            return self.group["probe_indices"][:], self.group["labels"][:]

"""`inspect rt`: evaluate every checkpoint on the bank and fill the r_t store.

Never trains. Reads the run directory (possibly copied from elsewhere, possibly read-only),
checks each checkpoint against its manifest and its run, evaluates it in eval mode on the
stored bank views and writes one chunk per checkpoint. With `group` G > 1, G checkpoints
of one setup are evaluated per forward pass as one grouped network (ssl_dynamics/packed.py;
on the CPU its fp32 outputs equal one-at-a-time evaluation bit for bit). Rerunning skips evaluated
checkpoints; `shard=(i, n)` takes the checkpoints whose (setup, seed, epoch) falls to shard i
of n (`rt_plan.shard_of`) so that n processes can share the work on one Zarr store. Every
check that can fail runs before the first write.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import artifacts as art
from ..devices import exact_fp32
from ..errors import UserError
from ..objectives import objective_for
from ..progress import bar
from . import bank as bank_mod
from . import rt_plan as plan
from .evaluate import evaluate, evaluate_group
from .rt_plan import BankRequest, EvalOptions, Selection, Task  # noqa: F401  (the API)
from .rt_threads import LOADER_THREADS, Loaded, Running, load_task, release
from .rtdata import export_h5, is_rt_archive, seed_work_store
from .store import RtStore, is_work_store, work_path
from .workspace import STORE_NAMES, Workspace


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: use i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


@dataclass(frozen=True)
class RtPlan:
    """What `check_rt` established before any write: the store, the setups, the bank to use
    or to build, the pending checkpoints (headers checked) and the label permutation."""

    store_path: Path
    setups: list[str]
    missing: dict
    bank_path: Path
    spec: bank_mod.BankSpec
    bank_exists: bool
    tasks: list[Task]
    random_labels: np.ndarray | None
    precision: str = "fp32"  # recorded per setup in the store, which never mixes two
    seed_from: Path | None = None  # the run's own store, copied into a new work folder's first


def check_rt(ws: Workspace, select: Selection = Selection(), request: BankRequest = BankRequest(),
             store_path: str | Path | None = None, precision: str = "fp32") -> RtPlan:
    """Every check of an evaluation that needs no write: selection, bank settings, the store
    path, the precision, checkpoint headers, label permutation, space."""
    run = ws.run
    store_path = Path(store_path) if store_path else ws.default_store()  # the one the analyses read
    if select.shard[1] > 1 and store_path.suffix != ".zarr":
        raise UserError("--shard needs a .zarr store: HDF5 has a single writer")
    folder = work_path(store_path).parent
    setups, missing = plan.check_selection(run, select)
    keys = plan.view_keys(run, setups)
    bank_path, spec, exists = plan.bank_plan(ws, request, keys)
    check_store_path(store_path, bank_path, ws.features)
    if not exists:
        plan.check_new_bank(run, store_path, bank_path, spec)
    seed_from = archive_store(ws, store_path, bank_path if exists else None)
    reads = seed_from or store_path  # what the store will hold before this evaluation
    plan.check_precision(reads, setups, precision)
    tasks = plan.pending_tasks(run, reads, setups, select)
    plan.precheck(run, tasks)
    random_labels = plan.label_permutation(run, setups)
    art.check_writable(folder)
    need = plan.store_bytes(run, setups, spec, keys) + (0 if exists else bank_mod.bank_bytes(spec, keys, (3, 32, 32)))
    art.check_space(folder, need, "the bank and the r_t store")
    return RtPlan(store_path, setups, missing, bank_path, spec, exists, tasks, random_labels, precision,
                  seed_from)


def archive_store(ws: Workspace, store_path: Path, bank_path: Path | None) -> Path | None:
    """The store whose results a new rt.zarr in the work folder starts from, evaluated on
    the same, existing bank: the work folder's own rt.h5 archive (when rt.zarr is asked for
    by name: cluster shards need Zarr), else the run directory's store when the work folder
    is another one (`--work`, a read-only archive). They are copied in first rather than
    evaluated again. None otherwise."""
    if bank_path is None or store_path.resolve() != ws.store.resolve() or work_path(store_path).exists():
        return None
    sources = [ws.dir / "rt.h5"]
    if ws.archive.resolve() != ws.dir.resolve():
        sources += [ws.archive / name for name in STORE_NAMES]
    for src in sources:
        with plan.existing_store(src) as store:  # an .h5's work store when it has one: the newer
            if store is not None and str(store.root_attrs().get("bank_fingerprint")) == \
                    bank_mod.read_fingerprint(bank_path):
                return work_path(src) if work_path(src).exists() else src
    return None


def check_store_path(store_path: Path, bank_path: Path, features: Path | None = None) -> None:
    """Refuse a store path that would replace or write into something other than an r_t
    store: the bank, the representation cache, an existing .h5 that is not an archive of
    `inspect rt` (analysis.h5, anything else), or an existing Zarr folder of something else;
    a store or bank path through a broken symbolic link, or in a folder that does not exist
    (refused before the bank is built)."""
    for option, path in (("--store", store_path), ("--store", work_path(store_path)), ("--bank", bank_path)):
        if (link := art.broken_link(path)) is not None:
            raise UserError(f"{option} {path}: {link}; remove it or choose another path")
    for option, path in (("--store", store_path), ("--bank", bank_path)):
        if not path.parent.is_dir():  # a typo in the path is not a new folder (as `export --out`)
            raise UserError(f"{option} {path}: its folder {path.parent} does not exist; create it first")
    if store_path.resolve() == bank_path.resolve():
        raise UserError(f"--store {store_path} is the bank; choose another path for the r_t store")
    if store_path.suffix in (".h5", ".hdf5") and store_path.exists() and not is_rt_archive(store_path):
        raise UserError(f"--store {store_path} exists and is not an r_t archive; choose another path")
    wp = work_path(store_path)
    if features is not None and wp.resolve() == features.resolve():
        raise UserError(f"--store {store_path} is the representation cache; choose another path")
    if wp.exists() and not is_work_store(wp):
        raise UserError(f"--store {store_path}: {wp} exists and is not an r_t store; choose another path"
                        + (" (or remove that empty folder)" if wp.is_dir() and not any(wp.iterdir()) else ""))


def open_rt(ws: Workspace, rt_plan: RtPlan, data: dict | None = None,
            echo=print) -> tuple[RtStore, bank_mod.Bank, list[Task]]:
    """The bank (built now if it does not exist yet), the store opened for writing with its
    arrays made or checked, and the planned tasks bound to the store's seed slots."""
    bank, built = ensure_bank(ws, rt_plan.bank_path, rt_plan.spec, rt_plan.bank_exists, data or {}, echo)
    path = rt_plan.store_path
    if rt_plan.seed_from is not None and not work_path(path).exists():
        seed_work_store(rt_plan.seed_from, bank.fingerprint, work_path(path))
        echo(f"{work_path(path)}: started from {rt_plan.seed_from} (its evaluated checkpoints are kept)")
    if path.suffix in (".h5", ".hdf5") and path.exists() and not work_path(path).exists():
        # the archive's work store is gone: start from what the archive holds, not from nothing
        seed_work_store(path, bank.fingerprint)
        echo(f"{work_path(path)}: rebuilt from {path} (evaluated checkpoints are kept)")
    store = RtStore(path)
    try:
        tasks = plan.bind_store(ws.run, store, bank, rt_plan.setups, rt_plan.tasks,
                                rt_plan.random_labels, rt_plan.precision)
    except UserError:
        if built:  # built just now for a store that refuses it: nothing to keep
            rt_plan.bank_path.unlink(missing_ok=True)
        raise
    return store, bank, tasks


def compute_rt(ws: Workspace, select: Selection = Selection(), opts: EvalOptions = EvalOptions(),
               request: BankRequest = BankRequest(), store_path: str | Path | None = None,
               data: dict | None = None, echo=print) -> dict:
    """Fill the store; returns counts and timing (checkpoints/s, images/s).

    `data` ({"dataset": ..., "data_root": ...}) says where the run's dataset is now, for
    building the bank when the run directory moved from its machine. Every check runs
    before the first write (`check_rt`).
    """
    if opts.group > 1:
        from ..packed import check_packable

        check_packable(ws.run.cfg.backbone, "--group")
    rt_plan = check_rt(ws, select, request, store_path, "bf16" if opts.bf16 else "fp32")
    store, bank, tasks = open_rt(ws, rt_plan, data, echo)
    if redo := plan.describe_redo(tasks):
        echo(redo)
    shard_i, shard_n = select.shard
    echo(f"{len(tasks)} checkpoints to evaluate"
         + (f" (shard {shard_i}/{shard_n})" if shard_n > 1 else "") + f" on {opts.device}"
         + (f", {opts.group} per pass" if opts.group > 1 else ""))
    res = evaluate_tasks(ws.run, store, bank, tasks, opts)
    store.consolidate()  # xarray reads the consolidated metadata: make sure it is current
    if rt_plan.store_path.suffix in (".h5", ".hdf5"):
        export_h5(store, rt_plan.store_path)
    return {**res, "store": str(rt_plan.store_path),
            "missing": {s: {str(k): v for k, v in m.items()} for s, m in rt_plan.missing.items()}}


def ensure_bank(ws: Workspace, path: Path, spec: bank_mod.BankSpec, exists: bool, data: dict,
                echo) -> tuple[bank_mod.Bank, bool]:
    """The bank, and whether this call built it. Built under a lock beside it: shards started
    together build it once, and the others load it (checked to be the one asked for)."""
    if exists:
        return bank_mod.load_bank(path), False
    # every (augmentation, views) pair of the run, not only the selected setups': later calls reuse it
    keys = plan.view_keys(ws.run, list(ws.run.cfg.setups))
    with art.file_lock(path.with_name(f".{path.name}.lock")):
        if path.exists():  # another process built it while this one waited
            bank_mod.check_existing(path, asdict(spec), keys, ws.run.dataset_sha256, ws.run.n_train)
            return bank_mod.load_bank(path), False
        dataset = ws.run.load_dataset(data.get("dataset"), data.get("data_root"))
        capped = f" (every training image: fewer than {spec.n_probe})" if spec.n_probe > ws.run.n_train else ""
        echo(f"building the bank: {min(spec.n_probe, ws.run.n_train)} images{capped} x {spec.n_replays} "
             f"replays of each augmentation -> {path}")
        return bank_mod.build_bank(path, dataset.train_x, dataset.train_y, keys, ws.run.dataset_sha256,
                                   spec, dataset.source_index(), dataset.train_files), True


def evaluate_tasks(run: art.Run, store: RtStore, bank: bank_mod.Bank, tasks: list[Task],
                   opts: EvalOptions) -> dict:
    """Evaluate the tasks in order, in groups of up to opts.group checkpoints of one setup,
    while loader threads read the next LOADER_THREADS + group checkpoints. On the CPU each
    core evaluates its own checkpoint on one thread (see cpu_evaluators)."""
    buffers = art.Buffers(pinned=torch.device(opts.device).type == "cuda")
    groups = plan.group_tasks(tasks, opts.group)
    order = iter([t for group in groups for t in group])
    workers = cpu_evaluators(opts)
    ahead = LOADER_THREADS + opts.group * workers  # checkpoints in memory at once: bounded
    t0 = time.perf_counter()
    progress = bar(len(tasks), "checkpoints", "ckpt", opts.progress)
    local, lock = threading.local(), threading.Lock()

    def evaluate_group(group: list[Task], loaded: list[Loaded]) -> list:
        cache = local.__dict__.setdefault("on_device", {})  # one network per thread
        return _evaluate(cache, run, store, bank, group, loaded, opts, lock, buffers)

    threads = torch.get_num_threads()
    running = Running(workers, evaluate_group, store, progress)
    with ThreadPoolExecutor(max_workers=LOADER_THREADS) as pool, exact_fp32(opts.device, opts.bf16):
        pending: deque = deque()

        def fill() -> None:
            while len(pending) < ahead and (task := next(order, None)) is not None:
                pending.append(pool.submit(load_task, run.paths, task, opts.verify, buffers))

        try:
            if workers > 1:
                torch.set_num_threads(1)
            for group in groups:
                fill()
                t_wait = time.perf_counter()
                loaded = [pending.popleft().result() for _ in group]
                running.waited["checkpoints"] += time.perf_counter() - t_wait
                fill()
                running.start(group, loaded)
            running.finish_all()
        except BaseException:  # keep what was evaluated before the failure, drop the rest
            for future in pending:
                future.cancel()
            running.finish_all(quiet=True)
            raise
        finally:
            torch.set_num_threads(threads)
            running.close()
    progress.close()
    seconds = time.perf_counter() - t0
    return {"evaluated": len(tasks), "seconds": seconds,
            "checkpoints_per_s": len(tasks) / seconds if tasks and seconds else 0.0,
            "images_per_s": running.images / seconds if tasks and seconds else 0.0,
            # where the evaluating thread's time went besides evaluating: waiting for the loader
            # (loader-bound when large) and for the store's writer
            "waited_s": {k: round(v, 3) for k, v in running.waited.items()}}


def cpu_evaluators(opts: EvalOptions) -> int:
    """Checkpoints evaluated at once: on the CPU one per torch thread, each on one thread.
    The small convolutions of these networks use a core far better in one thread per
    checkpoint than in several threads per convolution (benchmarks/bench_inspect.py), and a
    checkpoint's numbers then do not depend on how many cores the machine has. One on a GPU."""
    if torch.device(opts.device).type != "cpu":
        return 1
    return max(1, torch.get_num_threads())


def _evaluate(cache: dict, run: art.Run, store: RtStore, bank: bank_mod.Bank, group: list[Task],
              loaded: list[Loaded], opts: EvalOptions, lock: threading.Lock,
              buffers: art.Buffers) -> list[tuple[np.ndarray, np.ndarray]]:
    """(correct, p_true) of each checkpoint of a group: one at a time for a group of one,
    else one pass of a grouped network. `cache` is the calling thread's own."""
    dev = torch.device(opts.device)
    with lock:  # the store is read once per thread and setup (beside the writer thread's
        # writes, of other arrays: zarr's calls are thread-safe), never beside another read
        net, objective, views, targets = _on_device(cache, run, store, bank, group[0].setup, dev)
    if len(group) == 1:
        copy_state(net, loaded[0].state)
        release(buffers, loaded, dev)
        return [evaluate(net, objective, views, targets, bank.spec.simclr_batch, opts.bf16)]
    key = ("grouped", group[0].setup, len(group))
    if key not in cache:
        from ..packed import GroupedNetwork

        cache[key] = GroupedNetwork(net, len(group), shared_input=True, device=dev).eval()
    cache[key].load_state_dicts([item.state for item in loaded])
    release(buffers, loaded, dev)
    return evaluate_group(cache[key], objective, views, targets, bank.spec.simclr_batch, opts.bf16)


@torch.no_grad()
def copy_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`module.load_state_dict(state)` for a state with exactly the module's keys, without a
    wait per tensor: from pinned memory each copy is queued on the GPU like a kernel (a plain
    load_state_dict waits for the GPU after every one of its ~100 tensors)."""
    own = module.state_dict()
    if own.keys() != state.keys():
        raise ValueError("checkpoint keys differ from the network's")
    for key, v in own.items():
        src = state[key]
        if src.device != v.device and src.dtype != v.dtype:
            # bf16 weights: across devices copy_ would convert on the CPU into pageable
            # memory (and wait); moved first, they convert on the device
            src = src.to(v.device, non_blocking=True)
        v.copy_(src, non_blocking=True)


def _on_device(cache: dict, run: art.Run, store: RtStore, bank: bank_mod.Bank, setup: str, dev):
    """(network, objective, views, targets) of a setup on the device, made once per setup."""
    if setup not in cache:
        from ..models import build_network

        sc = run.cfg.setups[setup]
        objective = objective_for(sc)
        key = (sc.augment, objective.views_per_image)
        if key not in cache:
            cache[key] = torch.from_numpy(bank.views[key]).to(dev)
        net = build_network(run.cfg.backbone, sc.head_dim, run.cfg.width).to(dev).eval()
        targets = torch.from_numpy(store.read_targets(setup)).to(dev)
        cache[setup] = (net, objective, cache[key], targets)
    return cache[setup]

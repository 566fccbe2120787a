"""`inspect submit rt`: the r_t evaluation as a job array, job i = `inspect rt --shard i/n`.

The submitting process runs every check of `inspect rt`, builds the bank once and
creates the store's arrays, so that jobs only fill chunks. Shards whose checkpoints are
all evaluated, and shards that jobs of an earlier submission still hold, are not
submitted: submitting again after failures submits what is left. The shard of a
checkpoint depends only on its (setup, seed, epoch) and n (`rt_plan.shard_of`), so n must
stay the same for one store (rerun with the same --shards).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from .. import artifacts as art
from ..cluster import executor as ex
from ..cluster.options import ClusterOptions, check_environment, check_paths
from ..cluster.records import active_work, describe
from ..errors import UserError
from .rt import BankRequest, Selection, check_rt, open_rt
from .rt_plan import pending_tasks, shard_of
from .workspace import open_workspace


def submit_rt(run_dir: str | Path, work: str | Path | None, shards: int, select: Selection,
              bank: BankRequest, store: str | None, data: dict, cluster: ClusterOptions,
              device: str = "auto", bf16: bool = False, verify: bool = True,
              echo=print, group: str = "auto") -> ex.Submission | None:
    """Check, build the bank, plan the shards and submit those with work left."""
    from .rt_plan import resolve_group

    if shards < 1:
        raise UserError("--shards must be at least 1")
    if store and Path(store).suffix != ".zarr":
        raise UserError(f"--store {store}: jobs share the store, so it must be a .zarr folder")
    said: set[str] = set()

    def once(line: str) -> None:  # a path checked twice (as given, then as resolved) warns once
        if line not in said:
            said.add(line)
            echo(line)

    given = {"run directory": Path(run_dir), "work folder": work, "r_t store": store}
    check_environment(cluster, {k: Path(v) for k, v in given.items() if v}, once)
    mark = art.created_folders()  # a dry run leaves no empty work folder behind
    ws = open_workspace(run_dir, work, echo=echo)
    resolve_group(group, "cpu", ws.run.cfg.backbone)  # refuses bad values before any write
    store_path = Path(store).absolute() if store else ws.store.absolute()
    check_paths(cluster, {"work folder": ws.dir, "r_t store": store_path}, once)
    # every shard's checkpoints are checked here (shard 0/1 is the whole grid), before any write
    plan = check_rt(ws, replace(select, shard=(0, 1)), bank, store_path, "bf16" if bf16 else "fp32")
    jobs_dir = ws.dir.absolute() / "jobs"
    mine = {"setups": list(plan.setups), "epochs": None if select.epochs is None else sorted(select.epochs)}
    busy = busy_shards(active_work(jobs_dir, "rt", echo), str(store_path), shards, mine)
    if cluster.dry_run:
        planned = [{"shard": f"{i}/{shards}", "store": str(store_path), **mine} for i in range(shards)
                   if f"{i}/{shards}" not in busy]
        _dry_run(cluster, jobs_dir, planned, echo)
        art.remove_unused_folders(since=mark)
        return None
    open_rt(ws, plan, data, echo)  # the bank and the store's arrays, made once, here
    todo, planned = [], []
    per_shard = Counter(shard_of(t.setup, t.seed, t.epoch, shards) for t in
                        pending_tasks(ws.run, store_path, plan.setups, replace(select, shard=(0, 1))))
    for i in range(shards):
        key = f"{i}/{shards}"
        n = per_shard[i]
        if n and key not in busy:
            todo.append(i)
            planned.append({"shard": key, "store": str(store_path), **mine, "checkpoints": n})
    if busy:
        echo(f"shard(s) {', '.join(sorted(busy))} are in jobs still queued or running; not submitted again")
    if not todo:
        echo(f"nothing to submit: every selected checkpoint is in {store_path} or in a running job")
        return None
    from ..cluster.jobs import RtJob, RtWork  # imports submitit: checked above

    calls = [RtJob(RtWork(str(Path(run_dir).absolute()), str(ws.dir.absolute()), str(store_path),
                          replace(select, shard=(i, shards)), bank, data, device, bf16, verify, group),
                   sigterm_requeues=cluster.executor == "local") for i in todo]
    return ex.submit("rt", calls, planned, cluster, jobs_dir, echo)


def busy_shards(active: list[tuple[str, dict]], store: str, shards: int, mine: dict) -> dict[str, str]:
    """shard key -> job id of the running jobs that hold part of this submission's work: same
    store, same shard, overlapping setups and epochs (a record without them overlaps). An
    overlapping job that splits the store into another number of shards is refused: its
    shards cut across these."""
    busy = {}
    for jid, w in active:
        if w.get("store") != store:
            continue
        setups, epochs = w.get("setups"), w.get("epochs")
        if setups is not None and not set(setups) & set(mine["setups"]):
            continue
        if epochs is not None and mine["epochs"] is not None and not set(epochs) & set(mine["epochs"]):
            continue
        n = int(str(w.get("shard", "0/0")).partition("/")[2] or 0)
        if n != shards:
            raise UserError(f"job {jid} of an earlier submission evaluates this store in {n} shards: "
                            f"submit with --shards {n}, or once it has ended")
        busy[w["shard"]] = jid
    return busy


def _dry_run(cluster: ClusterOptions, jobs_dir: Path, work: list[dict], echo) -> None:
    for w in work:
        echo(f"job: {describe(w)}")
    echo(f"dry run: up to {len(work)} job(s) would be submitted to {cluster.executor} (shards "
         f"with nothing left to evaluate are left out); nothing was written")
    if cluster.executor == "slurm":
        echo(ex.sbatch_text(cluster, jobs_dir / "<stamp>-rt", len(work)))

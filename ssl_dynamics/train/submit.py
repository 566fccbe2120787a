"""`train submit`: the grid's incomplete (setup, seed) runs as a job array (submitit).

Everything is checked first (options, submitit, SLURM, a shared filesystem, the dataset,
the run directory, disk space); then the run directory is prepared once, here, so that
jobs only read run.json and setup.json; then the runs still short of their epochs, minus
those that jobs of earlier submissions are still holding, are split into jobs of
`runs_per_job` runs and submitted. Submitting again later submits only what is
incomplete, which is how a grid is resumed after failures or extended with new seeds.

A job takes runs of one setup only, since it packs only its own runs (one setup per pack):
a job spanning two setups would train two short packs. By default each job gets as many
runs as the pack its node will train (`--pack auto`: 4 on a GPU for the ResNet-18, else 1).
"""
from __future__ import annotations

from pathlib import Path

from .. import artifacts as art
from ..cluster import executor as ex
from ..cluster.options import ClusterOptions, check_environment
from ..cluster.records import active_work, describe
from ..config import RunConfig
from ..errors import UserError
from .grid import Job, check_grid
from .loop import TrainOptions, TrainRequest
from .prepare import prepare_run


def submit_grid(root: str | Path, cfg: RunConfig, setups: list[str], request: TrainRequest,
                cluster: ClusterOptions, runs_per_job: int | None = None, check_disk: bool = True,
                download: bool = True, echo=print) -> ex.Submission | None:
    """Check, prepare and submit; the submission (None when nothing was submitted).
    `runs_per_job` None: the pack each job will train (`job_pack`)."""
    if runs_per_job is None:
        runs_per_job = job_pack(request, cluster, cfg.backbone)
        echo(f"{runs_per_job} run(s) of one setup per job: the pack a job trains (--runs-per-job to change)")
    if runs_per_job < 1:
        raise UserError("--runs-per-job must be at least 1")
    pack = job_pack(request, cluster, cfg.backbone)
    if runs_per_job > pack and runs_per_job % pack:  # up to one pack, a job trains one pack
        raise UserError(f"--runs-per-job {runs_per_job} is more than a pack ({pack}) and not a "
                        f"multiple of it: each job would train {runs_per_job % pack} seed(s) in a "
                        f"smaller pack after the full ones; give {pack * (runs_per_job // pack)}, "
                        f"another multiple, or at most {pack}")
    root = Path(root).absolute()  # jobs may start in another working directory
    check_environment(cluster, {"run directory": root}, echo)
    dataset, jobs = check_grid(root, cfg, setups, TrainOptions(checkpoint_dtype=request.checkpoint_dtype),
                               check_disk, download, echo)
    jobs_dir = art.RunPaths(root).jobs
    busy = {(s, int(seed)): jid for jid, w in active_work(jobs_dir, "train", echo) for s, seed in w.get("runs", [])}
    held = [j for j in jobs if (j.setup, j.seed) in busy]
    if held:
        echo(f"{len(held)} run(s) are in jobs still queued or running "
             f"({', '.join(sorted(set(busy[j.setup, j.seed] for j in held)))}); not submitted again")
    todo = [j for j in jobs if (j.setup, j.seed) not in busy]
    if not todo:
        echo("nothing to submit: every selected run is trained" if not held else "nothing else to submit")
        return None
    groups = job_groups(todo, runs_per_job)
    work = [{"runs": [[j.setup, j.seed] for j in g]} for g in groups]
    if cluster.dry_run:
        _show_plan(cluster, jobs_dir, work, echo)
        return None
    from ..cluster.jobs import TrainJob, TrainWork  # imports submitit: checked above

    prepare_run(root, cfg, setups, dataset, echo)
    calls = [TrainJob(TrainWork(str(root), cfg, _runs(g), request),
                      sigterm_requeues=cluster.executor == "local") for g in groups]
    return ex.submit("train", calls, work, cluster, jobs_dir, echo)


def job_pack(request: TrainRequest, cluster: ClusterOptions, backbone: str) -> int:
    """The pack a job's node will train with: `--pack N`, or auto's choice for the device
    the job gets (a GPU when it asks for one; decided here, where no GPU may be visible)."""
    from .options import pack_for

    return pack_for(request.pack, cluster.gpus_per_job > 0 and request.device != "cpu", backbone)


def job_groups(todo: list[Job], runs_per_job: int) -> list[list[Job]]:
    """Split the runs into jobs of at most `runs_per_job`, each of one setup and one target
    epoch (what one pack can train), in grid order."""
    by_kind: dict[tuple[str, int], list[Job]] = {}
    for j in todo:
        by_kind.setdefault((j.setup, j.until), []).append(j)
    return [g[i:i + runs_per_job] for g in by_kind.values() for i in range(0, len(g), runs_per_job)]


def _runs(group: list[Job]) -> tuple[tuple[str, int, int], ...]:
    return tuple((j.setup, j.seed, j.until) for j in group)


def _show_plan(cluster: ClusterOptions, jobs_dir: Path, work: list[dict], echo) -> None:
    for i, w in enumerate(work):
        echo(f"job {i}: {describe(w)}")
    echo(f"dry run: {len(work)} job(s) would be submitted to {cluster.executor}; nothing was written")
    if cluster.executor == "slurm":
        echo(ex.sbatch_text(cluster, jobs_dir / "<stamp>-train", len(work)))

"""Submitting job arrays through submitit, waiting for them, resubmitting dead jobs.

Preemption and time limits are submitit's business: a job's callable is Checkpointable,
so on the requeue signal (SIGUSR2, sent by SLURM before the time limit or at preemption
with `send_user_signal`, and by the local controller before its timeout) submitit pickles
the same callable again and requeues it under the same job id. A job that dies without
that chance (SIGKILL, out of memory, a lost node) leaves no result; while `--wait`ing,
such jobs are resubmitted as new jobs doing the same work. Every retry resumes from what
the run directory holds.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import artifacts as art
from ..errors import UserError
from .options import ClusterOptions, require_submitit
from .records import describe, log_paths, new_record, write_record

# submitit requeues a job that reached its time limit at most this often (preemptions are
# not counted). Every requeue resumes from the last epoch, so the bound only stops a job
# whose work can never fit into its time limit from cycling for ever.
MAX_TIMEOUT_REQUEUES = 20
SIGNAL_DELAY_S = 120  # SIGUSR2 this long before the limit: time to finish writing an epoch
POLL_S = {"local": 0.5, "slurm": 30.0}  # sacct is a shared service: ask it rarely


def signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit that the requeue signal comes: SIGNAL_DELAY_S, or half
    the limit when that is shorter (a signal at or before the start would requeue the job
    before it did anything, every time)."""
    return min(SIGNAL_DELAY_S, time_min * 30)


def slurm_parameters(opts: ClusterOptions) -> dict[str, Any]:
    """SlurmExecutor parameters (the keyword names of submitit's sbatch writer)."""
    params: dict[str, Any] = {
        "job_name": opts.job_name, "time": opts.time_min, "nodes": 1, "ntasks_per_node": 1,
        "cpus_per_task": opts.cpus_per_job, "signal_delay_s": signal_delay_s(opts.time_min),
        "additional_parameters": {"requeue": True},  # SLURM may requeue it after preemption
    }
    optional = {"partition": opts.partition, "account": opts.account,
                "constraint": opts.constraint, "mem": opts.mem,
                "array_parallelism": opts.array_parallelism,
                "gpus_per_node": opts.gpus_per_job or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def sbatch_text(opts: ClusterOptions, folder: Path, n_jobs: int) -> str:
    """The sbatch script a SLURM submission of `n_jobs` jobs writes (needs no SLURM)."""
    from submitit.slurm import slurm

    job_folder = Path(folder) / "%j"
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit",
                        shlex.quote(str(job_folder))])
    return slurm._make_sbatch_string(command=command, folder=job_folder,
                                     map_count=n_jobs if n_jobs > 1 else None,
                                     **slurm_parameters(opts))


def make_executor(opts: ClusterOptions, folder: Path):
    submitit = require_submitit()
    if opts.executor == "local":
        ex = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
        # gpus_per_node=k makes CUDA_VISIBLE_DEVICES=0..k-1 in each local job
        ex.update_parameters(timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_job,
                             signal_delay_s=signal_delay_s(opts.time_min))
        return ex
    ex = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    ex.update_parameters(**slurm_parameters(opts))
    return ex


@dataclass
class Submission:
    """One submitted array: its callables, its jobs (replaced when resubmitted), its record."""

    kind: str
    folder: Path
    opts: ClusterOptions
    calls: list[Callable]
    work: list[dict]
    executor: Any
    jobs: list[Any]
    record: dict = field(default_factory=dict)

    def log(self, i: int) -> Path:
        return log_paths(self.record, str(self.jobs[i].job_id))[1]


def submit(kind: str, calls: list[Callable], work: list[dict], opts: ClusterOptions,
           jobs_dir: Path, echo=print) -> Submission:
    """Submit the callables as one array; write the record; return the submission."""
    from submitit.core.utils import FailedJobError

    folder = art.new_folder(jobs_dir, f"-{kind}")
    ex = make_executor(opts, folder)
    said = io.StringIO()  # submitit echoes sbatch's stderr; a refusal is said once, below
    try:
        with contextlib.redirect_stderr(said), ex.batch():
            jobs = [ex.submit(c) for c in calls]
    except (FailedJobError, subprocess.CalledProcessError, OSError) as e:  # sbatch refused or failed
        shutil.rmtree(folder, ignore_errors=True)  # only the pickles of jobs that do not exist
        raise UserError(f"{opts.executor} refused the submission, nothing was submitted: "
                        f"{_last_line(str(e))}") from None
    sys.stderr.write(said.getvalue())  # warnings of an accepted submission
    _drop_placeholder(folder)
    ids = [str(j.job_id) for j in jobs]
    sub = Submission(kind, folder, opts, calls, work, ex, jobs,
                     new_record(kind, folder, opts, work, ids))
    write_record(folder, sub.record)
    for jid, w in zip(ids, work):
        echo(f"job {jid}: {describe(w)}")
    echo(f"submitted {len(jobs)} job(s) to {opts.executor}; record and logs: {folder}")
    return sub


def wait(sub: Submission, echo=print) -> list[str]:
    """Wait until every job has ended; resubmit jobs that died without a result. Returns one
    line per job that failed for good (its error and log)."""
    pending, failures = set(range(len(sub.jobs))), []
    while pending:
        for i in sorted(pending):
            job = sub.jobs[i]
            if not job.done():
                continue
            pending.discard(i)
            if _cancelled(job):
                failures.append(f"job {job.job_id} ({describe(sub.work[i])}) was cancelled "
                                f"(log: {sub.log(i)})")
            elif job.paths.result_pickle.exists():
                failure = _outcome(sub, i)
                if failure:
                    failures.append(failure)
            elif len(sub.record["jobs"][i]["earlier_ids"]) < sub.opts.max_resubmits:
                refused = _resubmit(sub, i, echo)
                if refused:
                    failures.append(refused)
                else:
                    pending.add(i)
            else:
                failures.append(f"job {job.job_id} ({describe(sub.work[i])}) died without a result "
                                f"{sub.opts.max_resubmits + 1} times (log: {sub.log(i)})")
        if pending:
            time.sleep(POLL_S[sub.opts.executor])
    _drop_placeholder(sub.folder)  # the jobs' own start may make it again
    return failures


def _cancelled(job) -> bool:
    """Cancelled on purpose (scancel, or a local job's controller interrupted): not resubmitted."""
    if job.paths.result_pickle.exists():
        return False
    state = str(job.state)
    return state.startswith("CANCELLED") or state == "INTERRUPTED"


def _outcome(sub: Submission, i: int) -> str | None:
    """None when job i returned; else one line with its error and log."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    job = sub.jobs[i]
    try:
        job.result()
        return None
    except (FailedJobError, UncompletedJobError) as e:
        return f"job {job.job_id} ({describe(sub.work[i])}) failed: {failure_reason(str(e))} (log: {sub.log(i)})"


def failure_reason(message: str) -> str:
    """The exception line of a failed job: submitit puts the job's traceback between two
    dashed lines; its last line is `SomeError: what happened`."""
    parts = re.split(r"^-{5,}$", message, flags=re.M)
    return _last_line(parts[1] if len(parts) >= 3 else message)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def _resubmit(sub: Submission, i: int, echo) -> str | None:
    """Submit job i again; None, or why it could not be."""
    old = sub.jobs[i]
    from submitit.core.utils import FailedJobError

    try:
        sub.jobs[i] = sub.executor.submit(sub.calls[i])
    except (FailedJobError, subprocess.CalledProcessError, OSError) as e:  # refused: wait() reports it
        return (f"job {old.job_id} ({describe(sub.work[i])}) ended without a result and could not "
                f"be resubmitted: {_last_line(str(e))} (log: {sub.log(i)})")
    entry = sub.record["jobs"][i]
    entry["earlier_ids"].append(str(old.job_id))
    entry["job_id"] = str(sub.jobs[i].job_id)
    write_record(sub.folder, sub.record)
    _drop_placeholder(sub.folder)
    echo(f"job {old.job_id} ({describe(sub.work[i])}) ended without a result (killed?); "
         f"resubmitted as job {sub.jobs[i].job_id}: it resumes from the run directory")
    return None


def _drop_placeholder(folder: Path) -> None:
    """Remove the empty `%j` folder submitit leaves beside the jobs' own folders."""
    try:
        (folder / "%j").rmdir()
    except OSError:  # absent, or not empty: keep it
        pass

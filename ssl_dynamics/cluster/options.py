"""What a submission asks of the cluster, checked before anything is submitted.

Values are validated here (submitit checks only parameter names): partition, account and
constraint syntax, time limits (4h, 90m, 2d, 1-00:00:00, 04:00:00), memory (32G, 4000M).
The environment is checked next: submitit importable, SLURM's commands present, the
partition known to `sinfo`, and the run directory on a filesystem the nodes share.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

EXECUTORS = ("slurm", "local")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # SLURM partition / account names
# constraint expressions: features joined by & | , with [ ] ( ) and counts (*N)
CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.\-&|,\[\]()*:]+$")
MEM_RE = re.compile(r"^(\d+)\s*([KMGT]?)B?$", re.IGNORECASE)
UNIT_MIN = {"s": 1 / 60, "m": 1, "h": 60, "d": 24 * 60}
# paths that are node-local on every cluster (a job on another node would see another /tmp)
NON_SHARED_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm")
NON_SHARED_FSTYPES = ("tmpfs", "ramfs", "devtmpfs")  # memory-backed: one machine only
DEFAULT_TIME = "4h"  # longer than any single thesis run on an A100 (docs/cluster.md)
DEFAULT_CPUS = 4  # data sit on the GPU; a few cores feed it and write checkpoints
SINFO_TIMEOUT_S = 30  # a slow controller should not hang the submission forever


@dataclass(frozen=True)
class ClusterOptions:
    """A submission's resources and behaviour; every value already checked."""

    executor: str = "slurm"  # slurm | local (submitit's local processes)
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int = DEFAULT_CPUS
    time_min: int = 240  # the job's time limit, minutes
    mem: str | None = None  # SLURM --mem, e.g. 32G (None: the partition's default)
    array_parallelism: int | None = None  # at most this many jobs of the array at once
    job_name: str = "ssl-dynamics"
    max_resubmits: int = 3  # per job, while waiting: jobs that died without a result
    wait: bool = False  # stay until every job has ended, resubmitting dead ones
    dry_run: bool = False  # show what would be submitted; submit and write nothing


def parse_time(text: str) -> int:
    """A time limit in minutes (rounded up): 4h, 90m, 2d, 45, 1-00:00:00, 04:00:00, 30:00."""
    t = text.strip().lower()
    bad = UserError(f"--time {text!r}: use e.g. 4h, 90m, 2d, 1-00:00:00 or 04:00:00")
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", t):
        minutes = float(m.group(1)) * UNIT_MIN[m.group(2) or "m"]
    elif m := re.fullmatch(r"(\d+)-(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?", t):
        d, h, mi, s = (int(g or 0) for g in m.groups())
        if h > 23 or mi > 59 or s > 59:  # SLURM's days-hours:minutes:seconds
            raise bad
        minutes = d * 1440 + h * 60 + mi + s / 60
    elif m := re.fullmatch(r"(\d+):(\d{1,2})(?::(\d{1,2}))?", t):
        a, b, c = m.groups()
        if int(b) > 59 or (c is not None and int(c) > 59):  # 4:70 is a typo, not 5:10
            raise bad
        minutes = int(a) * 60 + int(b) + int(c) / 60 if c is not None else int(a) + int(b) / 60
    else:
        raise bad
    if minutes < 1:
        raise UserError(f"--time {text!r}: a job needs at least one minute")
    return math.ceil(minutes)


# a bare amount is in megabytes (SLURM's default); one below a gigabyte is a forgotten G
UNITLESS_MEM_MIN = 1024


def parse_mem(text: str) -> str:
    """SLURM's --mem value: an integer with K, M (the default), G or T."""
    m = MEM_RE.fullmatch(text.strip())
    if not m or int(m.group(1)) < 1:
        raise UserError(f"--mem {text!r}: use a whole amount with a unit, e.g. 32G or 4000M")
    if not m.group(2) and text.strip()[-1:].upper() == "B":  # bytes: not a unit SLURM takes
        raise UserError(f"--mem {text!r}: give K, M, G or T (e.g. 32G); SLURM takes no bytes")
    if not m.group(2) and int(m.group(1)) < UNITLESS_MEM_MIN:
        raise UserError(f"--mem {text!r} reads as {int(m.group(1))} megabytes (SLURM's unit when none is "
                        f"given): give the unit, e.g. {int(m.group(1))}G, or {int(m.group(1))}M if meant")
    return f"{int(m.group(1))}{(m.group(2) or 'M').upper()}"


def check_name(option: str, value: str | None, pattern: re.Pattern = NAME_RE) -> str | None:
    """`value` if it is a well-formed SLURM name (or, with CONSTRAINT_RE, a constraint)."""
    if value is None:
        return None
    parts = value.split(",") if pattern is NAME_RE else [value]
    if not value or not all(pattern.fullmatch(p) for p in parts):
        hint = ("use letters, digits, '_', '-' and '.' (several: comma-separated)" if pattern is NAME_RE
                else "use node features joined by & | , with [ ] ( ) and *N")
        raise UserError(f"{option} {value!r} is not a valid SLURM name: {hint}")
    return value


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("submitit is not installed: `pip install submitit` (ssl-dynamics depends "
                        "on it; `pip install -e .` installs it)") from None
    return submitit


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise UserError(f"--executor slurm: {' and '.join(missing)} not found on this machine; "
                        f"submit from the cluster's login node (or try it here with --executor local)")


def check_partition(partition: str | None) -> None:
    """Refuse a partition `sinfo` does not list (skipped when sinfo is absent or fails)."""
    if partition is None or shutil.which("sinfo") is None:
        return
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                             timeout=SINFO_TIMEOUT_S, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return
    unknown = [p for p in partition.split(",") if out and p not in out]
    if unknown:
        raise UserError(f"--partition {unknown[0]}: SLURM has no such partition "
                        f"(sinfo lists {', '.join(sorted(set(out)))})")


def mount_type(path: str) -> str:
    """Filesystem type of the mount holding `path` (from /proc/mounts; '' if unknown)."""
    best, kind = "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_shared(path: str | Path, what: str) -> None:
    """Refuse paths that only one machine sees: node-local folders and memory filesystems."""
    real = os.path.realpath(Path(path).absolute())
    local = next((p for p in NON_SHARED_PREFIXES if real == p or real.startswith(p + "/")), None)
    kind = mount_type(real)
    if local or kind in NON_SHARED_FSTYPES:
        where = f"under {local}" if local else f"on a {kind} filesystem"
        raise UserError(f"{what} {path} is {where}, which other nodes of a cluster do not see; "
                        f"SLURM jobs need it on a shared filesystem (docs/cluster.md)")


def check_environment(opts: ClusterOptions, shared: dict[str, Path], echo=print) -> None:
    """Everything about the machine a submission needs, before anything is written."""
    require_submitit()
    check_paths(opts, shared, echo)
    if opts.executor == "slurm":
        if not opts.dry_run:
            require_slurm()
        check_partition(opts.partition)
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have == 0 and opts.gpus_per_job > 0:  # the jobs would train on the CPU, planned as GPU jobs
        raise UserError(f"--gpus-per-job {opts.gpus_per_job} (the default is 1): this machine has no "
                        f"GPU; give --gpus-per-job 0 to run the local jobs on the CPU")
    if have < opts.gpus_per_job:
        raise UserError(f"--gpus-per-job {opts.gpus_per_job}: this machine has {have} GPU(s)")


def check_paths(opts: ClusterOptions, shared: dict[str, Path], echo=print) -> None:
    """SLURM jobs run on other nodes: every path they use must be on a shared filesystem
    (a dry run, which submits nothing, says so and goes on to show the script)."""
    if opts.executor == "slurm":
        for what, path in shared.items():
            try:
                check_shared(path, what)
            except UserError as e:
                if not opts.dry_run:
                    raise
                echo(f"warning: {e}; a submission without --dry-run is refused")

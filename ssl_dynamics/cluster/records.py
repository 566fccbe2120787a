"""Submission records: what was submitted where, kept in the run directory.

Every submission writes `<jobs>/<stamp>-<kind>.json` (atomically, rewritten when a job is
resubmitted) next to submitit's folder `<jobs>/<stamp>-<kind>/` with one subfolder per
job: its pickles and its logs (`<job id>_0_log.out`, `<job id>_0_log.err`). Job states are
asked of SLURM (one `sacct` call per record) or, for local jobs, read from their result
files and processes.
"""
from __future__ import annotations

import datetime as _dt
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .. import artifacts as art
from .options import ClusterOptions

SACCT_TIMEOUT_S = 30  # a slow accounting database should not hang `train status`
# A SLURM job whose state neither sacct nor squeue gave: it may still run, so it holds its work.
UNANSWERED = "UNKNOWN (SLURM did not answer)"
NO_SLURM = "UNKNOWN (no SLURM here)"  # records of a cluster read elsewhere: nothing can run here
# SLURM states of a job that still holds (or will hold) its work
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
                 "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING")


def new_record(kind: str, folder: Path, opts: ClusterOptions, work: list[dict], ids: list[str]) -> dict:
    return {
        "kind": kind, "executor": opts.executor, "folder": str(Path(folder).absolute()),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "command": " ".join(sys.argv), "options": asdict(opts),
        "jobs": [{"index": i, "job_id": j, "work": w, "earlier_ids": []}
                 for i, (j, w) in enumerate(zip(ids, work))],
    }


def record_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".json")


def write_record(folder: Path, record: dict) -> None:
    art.write_json_atomic(record_path(folder), record)


def read_records(*jobs_dirs: Path) -> list[dict]:
    """Every readable record in the folders, oldest first (`_scan` also names the damaged)."""
    return _scan(*jobs_dirs)[0]


def _scan(*jobs_dirs: Path) -> tuple[list[dict], list[Path]]:
    out, damaged = [], []
    for d in jobs_dirs:
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                rec = art.read_json(p, dict)
            except Exception:  # noqa: BLE001 - a damaged record must not break `status`
                damaged.append(p)
                continue
            if not valid_record(rec):
                damaged.append(p)
                continue
            # the jobs' folder lies beside its record, wherever the run directory is now
            # (and whatever directory the submission was made from)
            rec["folder"] = str(p.with_suffix("").absolute())
            out.append(rec)
    return sorted(out, key=lambda r: str(r.get("created"))), damaged


def valid_record(rec: dict) -> bool:
    """Whether a record has the structure its readers rely on (as `new_record` writes it)."""
    def job_ok(job) -> bool:
        return (isinstance(job, dict) and isinstance(job.get("job_id"), (str, int))
                and not isinstance(job.get("job_id"), bool)
                and isinstance(job.get("earlier_ids", []), list)
                and all(isinstance(e, str) for e in job.get("earlier_ids", []))
                and work_ok(job.get("work", {})))

    def work_ok(work) -> bool:
        if not isinstance(work, dict):
            return False
        if "shard" in work and not re.fullmatch(r"\d+/\d+", str(work["shard"])):
            return False
        lists = [work[k] for k in ("setups", "epochs") if work.get(k) is not None]
        if not all(isinstance(v, list) and all(isinstance(x, (str, int)) for x in v) for v in lists):
            return False
        runs = work.get("runs", [])
        return isinstance(runs, list) and all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
            and isinstance(r[1], int) and not isinstance(r[1], bool) for r in runs)

    return (isinstance(rec.get("jobs"), list) and "folder" in rec
            and isinstance(rec.get("executor", ""), str) and all(map(job_ok, rec["jobs"])))


def job_states(record: dict) -> dict[str, str]:
    """job id -> state, for every job of a record: SLURM's (`slurm_states`) or, for local
    jobs, FINISHED (it returned), FAILED (it raised; its result holds the error), RUNNING or
    ENDED (no result)."""
    ids = [str(j["job_id"]) for j in record["jobs"]]
    if record.get("executor") == "slurm":
        return slurm_states(ids)
    folder = Path(record["folder"])
    return {j: _local_outcome(folder / j / f"{j}_0_result.pkl")
            or ("RUNNING" if _local_controller_alive(j) else "ENDED (no result)") for j in ids}


def _local_outcome(result: Path) -> str | None:
    """FINISHED or FAILED from a local job's result file (submitit writes one either way:
    ("success", value) or ("error", traceback)); None without one."""
    if not result.exists():
        return None
    try:
        from submitit.core.utils import pickle_load

        outcome = pickle_load(result)[0]
    except Exception:  # noqa: BLE001 - unreadable (being written, or no submitit here)
        return "FINISHED (result unreadable)"
    return "FAILED" if outcome == "error" else "FINISHED"


def slurm_states(ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job id (array tasks `123_4` included).

    One sacct call; the ids it does not know (accounting disabled or purged, or sacct
    failing) are looked up in squeue, which lists every job still queued or running: one it
    does not list has ended. Where neither answers, the state is UNANSWERED, which counts as
    active (a job SLURM may still run is not submitted again); with no SLURM command here at
    all it is NO_SLURM, which does not.
    """
    known = _sacct(ids) or {}
    missing = [j for j in ids if j not in known]
    if missing:
        queued = _squeue()
        for j in missing:
            if queued is not None:
                known[j] = queued.get(j, "ENDED (not in squeue)")
            else:
                known[j] = UNANSWERED if shutil.which("sacct") or shutil.which("squeue") else NO_SLURM
    return {j: known[j] for j in ids}


def _sacct(ids: list[str]) -> dict[str, str] | None:
    """job id -> state from one sacct call; None when sacct is absent or fails."""
    out = _ask(["sacct", "-j", ",".join(ids), "-o", "JobID,State", "--parsable2", "--noheader"])
    if out is None:
        return None
    known: dict[str, str] = {}
    for line in out.splitlines():
        jid, _, state = line.strip().partition("|")
        # a pending array is one line, `123_[0-9%4]`: give each of its tasks that state
        if m := re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", jid):
            for task in _expand(m.group(2)):
                known.setdefault(f"{m.group(1)}_{task}", state)
        elif jid:
            known.setdefault(jid, state)
    return known


def _squeue() -> dict[str, str] | None:
    """job id -> state of every queued and running job (arrays one task a line; anyone's, as
    a run directory may be shared); None when squeue is absent or fails."""
    out = _ask(["squeue", "--noheader", "--array", "--format=%i|%T"])
    if out is None:
        return None
    return {jid: state for jid, _, state in (ln.strip().partition("|") for ln in out.splitlines()) if jid}


def _ask(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SACCT_TIMEOUT_S,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _expand(spec: str) -> list[int]:
    """"0-3,7" -> [0, 1, 2, 3, 7]."""
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        if a.isdigit() and (not b or b.isdigit()):
            out += list(range(int(a), int(b or a) + 1))
    return out


def _local_controller_alive(job_id: str) -> bool:
    """A local job's id is its controller's pid: alive and still submitit's controller."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline


def is_active(state: str) -> bool:
    return state == UNANSWERED or (state.split() or [""])[0] in ACTIVE_STATES


def active_work(jobs_dir: Path, kind: str, echo=None) -> list[tuple[str, dict]]:
    """(job id, work) of earlier submissions' jobs that are still queued or running, or
    whose state SLURM did not give (said through `echo`, with what to do)."""
    out = []
    records, damaged = _scan(jobs_dir)
    if damaged and echo:
        echo(f"damaged submission record(s) {', '.join(map(str, damaged))}: their jobs are not "
             f"known, so runs in them may be submitted again; restore or delete the file(s)")
    for rec in records:
        if rec.get("kind") != kind:
            continue
        states = job_states(rec)
        silent = [str(j["job_id"]) for j in rec["jobs"] if states[str(j["job_id"])] == UNANSWERED]
        if silent and echo:
            echo(f"SLURM gave no state for job(s) {', '.join(silent)} (sacct and squeue failed): "
                 f"they count as queued or running; submit again when SLURM answers, or delete "
                 f"{record_path(Path(rec['folder']))} if they are gone")
        for job in rec["jobs"]:
            if is_active(states[str(job["job_id"])]):
                out.append((str(job["job_id"]), job.get("work", {})))
    return out


def log_paths(record: dict, job_id: str) -> tuple[Path, Path]:
    """(stdout, stderr) log files of a job."""
    folder = Path(record["folder"]) / job_id
    return folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err"


def status_lines(*jobs_dirs: Path) -> list[str]:
    """One line per job of every record: submission, id, state, work."""
    records, damaged = _scan(*jobs_dirs)
    lines = [f"{p.stem:<24} damaged record {p} (not read)" for p in damaged]
    for rec in records:
        name, states = Path(rec["folder"]).name, job_states(rec)
        for job in rec["jobs"]:
            jid = str(job["job_id"])
            earlier = f" (resubmitted; earlier {', '.join(job['earlier_ids'])})" if job.get("earlier_ids") else ""
            lines.append(f"{name:<24} {rec['executor']:<5} {jid:>12}  {states[jid]:<18} "
                         f"{describe(job.get('work', {}))}{earlier}")
    return lines


def describe(work: dict) -> str:
    """What a job runs, in a few words: `simclr seeds 0-3; supervised seed 4` or `shard 2/8`."""
    if "shard" in work:
        return f"r_t shard {work['shard']}"
    by_setup: dict[str, list[int]] = {}
    for setup, seed in work.get("runs", []):
        by_setup.setdefault(setup, []).append(int(seed))
    parts = [f"{setup} seed{'s' if len(seeds) > 1 else ''} {ranges(seeds)}"
             for setup, seeds in by_setup.items()]
    return "; ".join(parts) or "-"


def ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the syntax of --seeds)."""
    vals, out = sorted(set(values)), []
    for v in vals:
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in out)

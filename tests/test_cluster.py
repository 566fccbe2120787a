"""Several processes, one run directory: device workers, submitit jobs (local executor, real
subprocesses) killed with SIGTERM and SIGKILL, sharded r_t jobs, and the refusals that
come before anything is submitted. Every result is compared bit for bit with one process.

All processes run with one torch thread (OMP_NUM_THREADS=1): CPU kernels give the same
bits only for the same thread count, and two cores are shared by up to three processes.
"""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ssl_dynamics
from ssl_dynamics import artifacts as art
from ssl_dynamics.cluster import options as copts
from ssl_dynamics.cluster.cli import from_cli
from ssl_dynamics.cluster.executor import sbatch_text
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect.rt_plan import shard_of
from ssl_dynamics.inspect.store import RtStore
from ssl_dynamics.train.cli import cli as train_cli

from _util import rt

PACKAGE_ROOT = str(Path(ssl_dynamics.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "OMP_NUM_THREADS": "1"}
SETUPS = ("simclr", "supervised")
EPOCHS = 6  # enough epochs that a job is still running when the test kills it
GRID = ["--preset", "smoke", "--set", "train_subset=32", "--set", "batch_size=16",
        "--epochs", str(EPOCHS), "--setup", "simclr", "--setup", "supervised", "--seeds", "0-1",
        "--deterministic"]
LOCAL = ["--executor", "local", "--gpus-per-job", "0"]
NO_SETUP = [a for i, a in enumerate(GRID) if "--setup" not in GRID[max(i - 1, 0):i + 1]]  # GRID, all setups
TIMEOUT_S = 300  # a generous bound for a subprocess on a loaded 2-core machine


def command(phase: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"from ssl_dynamics.{phase}.cli import main; main()", *args]


def run(phase: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(phase, *args), env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def manifests(root: Path) -> dict:
    paths = art.RunPaths(root)
    return {(s, seed): art.read_json(paths.manifest(s, seed))["checkpoints"]
            for s in SETUPS for seed in (0, 1)}


def wait_for(condition, what: str, timeout: float = TIMEOUT_S):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def task_pid(controller: int) -> int:
    """The job's Python task: the child of submitit's local controller (the job id)."""
    def child():
        try:
            return int(Path(f"/proc/{controller}/task/{controller}/children").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None
    return wait_for(child, f"the task of job {controller}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid trained by one process: what every other way must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run("train", "run", *GRID, "--device", "cpu", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def main_in_process(monkeypatch, capsys, phase: str, *args: str):
    """A CLI's main() in this process: (exit status, stdout, stderr)."""
    module = __import__(f"ssl_dynamics.{phase}.cli", fromlist=["main"])
    monkeypatch.setattr(sys, "argv", [phase, *args])
    with pytest.raises(SystemExit) as e:
        module.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# --------------------------------------------------------------------------- devices

def test_devices_and_a_racing_process_give_the_same_checkpoints(tmp_path, reference):
    """`--devices cpu,cpu` (two workers) and an independent `train run` race on one fresh
    run directory: every run is trained once, and the bits equal one process's."""
    out = tmp_path / "run"
    workers = subprocess.Popen(command("train", "run", *GRID, "--devices", "cpu,cpu", "--no-progress",
                                       "--out", str(out)),
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    single = subprocess.Popen(command("train", "run", *GRID, "--device", "cpu", "--no-progress",
                                      "--out", str(out)),
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w_out, w_err = workers.communicate(timeout=TIMEOUT_S)
    s_out, s_err = single.communicate(timeout=TIMEOUT_S)
    assert workers.returncode == 0, w_err
    assert single.returncode == 0, s_err
    assert manifests(out) == manifests(reference)
    said = w_out + s_out
    for setup in SETUPS:
        for seed in (0, 1):
            assert said.count(f"{setup} seed {seed}: from scratch") == 1, said
    worker_lines = [ln for ln in w_out.splitlines() if ln.startswith("[")]
    assert worker_lines and all(ln.startswith(("[0 cpu] ", "[1 cpu] ")) for ln in worker_lines)
    logs = sorted(p.name for p in (out / "logs").glob("*/*.log"))
    assert logs == ["worker-0-cpu.log", "worker-1-cpu.log"]


def test_a_seed_that_diverges_under_workers_is_tried_once_and_named(tmp_path):
    """Two workers, two seeds that diverge: each seed is tried by one worker only (the other
    sees its manifest record the divergence and leaves it), and the command names both
    and exits 2, as one process does."""
    out = tmp_path / "run"
    grid = ["--preset", "smoke", "--set", "train_subset=32", "--set", "batch_size=16", "--epochs", "2",
            "--setup", "supervised", "--seeds", "0-1", "--set", "lr=1e12"]
    r = run("train", "run", *grid, "--devices", "cpu,cpu", "--no-progress", "--out", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "2 runs diverged: " in r.stderr, r.stderr
    for seed in (0, 1):
        assert f"supervised seed {seed} in epoch 1" in r.stderr
        assert r.stdout.count(f"diverged: supervised seed {seed}: loss became") == 1, r.stdout


def test_workers_stop_when_their_parent_is_terminated_or_killed(tmp_path):
    """SIGTERM to the parent alone stops every worker (exit 130, "interrupted"); SIGKILL of
    the parent leaves no worker training the grid as an orphan."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = tmp_path / sig.name
        parent = subprocess.Popen(command("train", "run", *[a if a != str(EPOCHS) else "500" for a in GRID],
                                          "--devices", "cpu,cpu", "--no-progress", "--out", str(out)),
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        workers = wait_for(lambda: [int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
                                    .read_text().split()] if len(list(out.glob("checkpoints/*/seed-*/epoch-0000.safetensors"))) >= 2 else None,
                           "two workers training")
        parent.send_signal(sig)
        _, err = parent.communicate(timeout=TIMEOUT_S)
        if sig == signal.SIGTERM:
            assert parent.returncode == 130 and "interrupted" in err, err
        wait_for(lambda: not any(Path(f"/proc/{w}").exists() and "Z" not in _proc_state(w) for w in workers),
                 "the workers to stop", timeout=60)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_worker_threads_follow_the_cpu_affinity_and_signals_are_named(monkeypatch):
    import os
    import signal

    from ssl_dynamics.train import workers

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert workers.cpu_threads(["cpu", "cpu"]) == 2
    assert workers._ended(-signal.SIGKILL) == "was killed by SIGKILL"
    assert workers._ended(1) == "exited with status 1"


# --------------------------------------------------------------------------- train submit

def test_submitted_jobs_survive_sigterm_and_sigkill(tmp_path, reference, monkeypatch, capsys):
    """Two local jobs of two runs each: job 0's task gets SIGTERM (preemption: requeued
    under the same id), job 1's gets SIGKILL (no result: resubmitted by the waiting
    submitter). Both resume from the run directory; the checkpoints equal one process's."""
    out = tmp_path / "run"
    proc = subprocess.Popen(command("train", "submit", *GRID, *LOCAL, "--runs-per-job", "2",
                                    "--out", str(out)),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    record_file = wait_for(lambda: next((out / "jobs").glob("*.json"), None), "the submission record")
    jobs = art.read_json(record_file)["jobs"]
    assert [j["work"]["runs"] for j in jobs] == [[["simclr", 0], ["simclr", 1]],
                                                [["supervised", 0], ["supervised", 1]]]
    paths = art.RunPaths(out)
    for job, sig in zip(jobs, (signal.SIGTERM, signal.SIGKILL)):
        setup, seed = job["work"]["runs"][0]
        wait_for(lambda: paths.checkpoint(setup, seed, 1).exists(), f"{setup} seed {seed} epoch 1")
        assert not paths.checkpoint(setup, 1, EPOCHS).exists(), "the job ended before the kill"
        os.kill(task_pid(int(job["job_id"])), sig)
    said, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, said
    assert manifests(out) == manifests(reference)
    final = art.read_json(record_file)["jobs"]
    assert final[0]["job_id"] == jobs[0]["job_id"] and final[0]["earlier_ids"] == []  # requeued
    assert final[1]["earlier_ids"] == [jobs[1]["job_id"]]  # resubmitted as a new job
    assert f"job {jobs[1]['job_id']} (supervised seeds 0-1) ended without a result" in said
    jid = final[0]["job_id"]
    logs = [record_file.with_suffix("") / jid / f"{jid}_0_log.{ext}" for ext in ("out", "err")]
    assert "Requeued job" in "".join(p.read_text() for p in logs)

    status = CliRunner().invoke(train_cli, ["status", str(out)])
    assert "4 complete" in status.output and final[1]["job_id"] in status.output
    assert status.output.count("FINISHED") == 2
    # submitting again submits nothing: every run is complete
    code, stdout, _ = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *LOCAL,
                                      "--out", str(out))
    assert code == 0 and "nothing to submit" in stdout
    assert len(list((out / "jobs").glob("*.json"))) == 1


# --------------------------------------------------------------------------- inspect submit

def test_inspect_submit_rt_three_shards_equals_one_process(tmp_path, reference):
    bank = ["--probes", "16", "--replays", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the jobs: the same bits need the same thread count
    try:
        rt(reference, work=tmp_path / "one", n_probe=16, n_replays=2)
    finally:
        torch.set_num_threads(threads)
    r = run("inspect", "submit", "rt", str(reference), "--shards", "3", "--work",
            str(tmp_path / "three"), *LOCAL, *bank)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"next: inspect all {reference} --work {tmp_path / 'three'}" in r.stdout  # what reads it
    record = art.read_json(next((tmp_path / "three" / "jobs").glob("*.json")))
    assert [j["work"]["shard"] for j in record["jobs"]] == ["0/3", "1/3", "2/3"]
    # each job's planned count: its shard's share of every checkpoint (epochs 0..EPOCHS)
    share = Counter(shard_of(s, seed, e, 3) for s in SETUPS for seed in (0, 1) for e in range(EPOCHS + 1))
    assert [j["work"]["checkpoints"] for j in record["jobs"]] == [share[i] for i in range(3)]
    one = RtStore(tmp_path / "one" / "rt.zarr", writable=False)
    three = RtStore(tmp_path / "three" / "rt.zarr", writable=False)
    assert one.setups() == three.setups() == list(SETUPS)
    for setup in SETUPS:
        a, b = one.read(setup), three.read(setup)
        assert b["done"].all()
        for name in ("correct", "p_true", "done", "targets"):
            np.testing.assert_array_equal(a[name], b[name])


# --------------------------------------------------------------------------- refusals

@pytest.fixture
def shared_tmp(monkeypatch):
    """Let the test's /tmp folders pass for a shared filesystem."""
    monkeypatch.setattr(copts, "NON_SHARED_PREFIXES", ())
    monkeypatch.setattr(copts, "NON_SHARED_FSTYPES", ())


SLURM = ["--executor", "slurm", "--partition", "gpu"]


@pytest.mark.parametrize("phase, args, message", [
    ("train", ["run", *GRID, "--devices", "cuda:7"], "CUDA device(s)"),
    ("train", ["run", *GRID, "--devices", "cpu,tpu"], "unknown device 'tpu'"),
    ("train", ["run", *GRID, "--devices", "cpu,cpu", "--device", "cpu"], "not both"),
    ("train", ["run", *GRID, "--devices", ""], "--devices '': use all"),
    ("train", ["run", *NO_SETUP, "--setup", ","], "--setup names no setup"),
    ("train", ["submit", *NO_SETUP, *SLURM, "--setup", ""], "--setup names no setup"),
    ("train", ["run", *GRID, "--device", ""], "unknown device ''"),
    ("train", ["submit", *GRID, "--executor", "slurm", "--partition", "gpu;rm -rf"],
     "--partition 'gpu;rm -rf' is not a valid SLURM name"),
    ("train", ["submit", *GRID, *SLURM, "--time", "4 hours"], "--time '4 hours'"),
    ("train", ["submit", *GRID, *SLURM, "--mem", "lots"], "--mem 'lots'"),
    ("train", ["submit", *GRID, *SLURM, "--constraint", "a100 h100"], "--constraint 'a100 h100'"),
    ("train", ["submit", *GRID, *SLURM], "under /tmp"),
    ("inspect", ["submit", "rt", "{reference}", *SLURM], "under /tmp"),
    ("inspect", ["submit", "rt", "{reference}", *LOCAL, "--store", "{out}/rt.h5"], "must be a .zarr"),
])
def test_bad_input_one_line_exit_2_nothing_submitted(tmp_path, reference, monkeypatch, capsys,
                                                      phase, args, message):
    if "cuda:7" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "run"
    args = [a.replace("{reference}", str(reference)).replace("{out}", str(out)) for a in args]
    if phase == "train":
        args += ["--out", str(out)]
    before = sorted(reference.rglob("*"))
    code, _, err = main_in_process(monkeypatch, capsys, phase, *args)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and message in err, err
    assert not out.exists()
    assert sorted(reference.rglob("*")) == before


def test_devices_all_without_gpu(tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = main_in_process(monkeypatch, capsys, "train", "run", *GRID, "--devices", "all",
                                   "--out", str(tmp_path / "run"))
    assert code == 2 and "sees no CUDA device" in err and not (tmp_path / "run").exists()


def test_no_submitit_and_no_slurm(tmp_path, monkeypatch, capsys, shared_tmp):
    out = tmp_path / "run"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch, srun, sinfo, sacct
    code, _, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *SLURM, "--out", str(out))
    assert code == 2 and "sbatch and srun not found" in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # what a missing package looks like
    code, _, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *LOCAL, "--out", str(out))
    assert code == 2 and "submitit is not installed" in err and err.count("\n") == 1
    assert not out.exists()


def test_shared_filesystem_check(tmp_path):
    for path in ("/tmp/x/run", "/var/tmp/run", "/dev/shm/run"):
        with pytest.raises(UserError, match="shared filesystem"):
            copts.check_shared(path, "run directory")
    assert copts.mount_type("/proc/self") == "proc"


# --------------------------------------------------------------------------- SLURM script

def test_option_values():
    assert [copts.parse_time(t) for t in ("4h", "90m", "2d", "45", "1-00:00:00", "04:00:00", "30:00")] == \
        [240, 90, 2880, 45, 1440, 240, 30]
    assert [copts.parse_mem(m) for m in ("32G", "4000", "1t", "32GB", "12M", "1024")] == \
        ["32G", "4000M", "1T", "32G", "12M", "1024M"]
    with pytest.raises(UserError, match=r"--mem '12' reads as 12 megabytes .*: give the unit, e.g. 12G"):
        copts.parse_mem("12")  # a forgotten G would start every job out of memory
    with pytest.raises(UserError, match="reads as 1023 megabytes"):
        copts.parse_mem("1023")
    for text in ("500B", "2048b"):
        with pytest.raises(UserError, match="SLURM takes no bytes"):
            copts.parse_mem(text)
    for bad in ("", "4 hours", "0m", "1:2:3:4", "4:70", "2:00:61", "1-24"):
        with pytest.raises(UserError, match="--time"):
            copts.parse_time(bad)


def test_sbatch_script_without_slurm(tmp_path):
    opts = from_cli(executor="slurm", partition="gpu", account="proj1", constraint="a100|h100",
                    gpus_per_job=1, cpus_per_job=8, time_="4h", mem="32G", array_parallelism=2,
                    job_name=None, max_resubmits=3, wait=None, dry_run=False, default_name="ssl-train")
    text = sbatch_text(opts, tmp_path / "jobs" / "x-train", 4)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --constraint='a100|h100'",
                 "#SBATCH --time=240", "#SBATCH --array=0-3%2", "#SBATCH --requeue",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=32G", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --job-name=ssl-train", "#SBATCH --signal=USR2@"):
        assert line in text, line
    assert "submitit.core._submit" in text


def test_dry_run_shows_the_script_and_writes_nothing(tmp_path, monkeypatch, capsys, shared_tmp):
    out = tmp_path / "run"
    code, stdout, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *SLURM,
                                        "--account", "proj1", "--runs-per-job", "3", "--dry-run",
                                        "--out", str(out))
    assert code == 0, err
    assert "2 job(s) would be submitted" in stdout and "#SBATCH --array=0-1" in stdout
    assert "#SBATCH --partition=gpu" in stdout and "#SBATCH --account=proj1" in stdout
    assert not out.exists()


def test_a_dry_run_on_a_local_folder_warns_and_shows_the_script(tmp_path, reference, monkeypatch, capsys):
    """A path other nodes do not see refuses a submission (test_bad_input_...), but a dry run
    submits nothing: it says so in a warning and still shows the script, writing nothing."""
    out = tmp_path / "run"
    code, stdout, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *SLURM, "--dry-run",
                                        "--out", str(out))
    assert code == 0, err
    assert f"warning: run directory {out} is under /tmp, which other nodes" in stdout
    assert "a submission without --dry-run is refused" in stdout and "#SBATCH --partition=gpu" in stdout
    assert not out.exists()
    before = sorted(reference.rglob("*"))
    code, stdout, err = main_in_process(monkeypatch, capsys, "inspect", "submit", "rt", str(reference), *SLURM,
                                        "--work", str(tmp_path / "w"), "--dry-run")
    assert code == 0, err
    assert "warning: run directory" in stdout and "#SBATCH --partition=gpu" in stdout
    assert stdout.count(f"warning: work folder {tmp_path / 'w'} is under /tmp") == 1, stdout  # checked twice, said once
    assert sorted(reference.rglob("*")) == before and not (tmp_path / "w").exists()


def test_jobs_default_to_the_pack_they_train(tmp_path, monkeypatch, capsys, shared_tmp):
    """With a GPU per job, `--pack auto` trains packs of 4: each job gets 4 runs of one setup
    (a lone run would be paired with a throw-away copy); an explicit --pack sets it too."""
    grid = [*GRID[:-2], "0-4", "--dry-run", "--out", str(tmp_path / "run")]  # seeds 0-4
    for extra, jobs in (([], ["simclr seeds 0-3", "simclr seed 4", "supervised seeds 0-3", "supervised seed 4"]),
                        (["--pack", "2"], ["simclr seeds 0-1", "simclr seeds 2-3", "simclr seed 4",
                                           "supervised seeds 0-1", "supervised seeds 2-3", "supervised seed 4"]),
                        (["--gpus-per-job", "0"], [f"{s} seed {i}" for s in SETUPS for i in range(5)]),
                        (["--runs-per-job", "3"], ["simclr seeds 0-2", "simclr seeds 3-4",
                                                   "supervised seeds 0-2", "supervised seeds 3-4"])):
        code, stdout, err = main_in_process(monkeypatch, capsys, "train", "submit", *grid, *SLURM, *extra)
        assert code == 0, err
        assert [line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("job ")] == jobs


def test_runs_per_job_beyond_a_pack_must_be_a_multiple_of_it(tmp_path, monkeypatch, capsys, shared_tmp):
    """3 runs a job with packs of 2 would train a lone seed after each pair: refused; 4 (two
    packs) and 1 (less than a pack) are taken."""
    grid = [*GRID[:-2], "0-4", "--dry-run", "--out", str(tmp_path / "run"), "--pack", "2"]
    code, _, err = main_in_process(monkeypatch, capsys, "train", "submit", *grid, *SLURM, "--runs-per-job", "3")
    assert code == 2 and "--runs-per-job 3 is more than a pack (2) and not a multiple of it" in err, err
    for n, first in (("4", "simclr seeds 0-3"), ("1", "simclr seed 0")):
        code, stdout, err = main_in_process(monkeypatch, capsys, "train", "submit", *grid, *SLURM,
                                            "--runs-per-job", n)
        assert code == 0 and f"job 0: {first}\n" in stdout, err


# --------------------------------------------------------------------------- job states

def fake_commands(folder: Path, **scripts: str) -> None:
    """Stand-ins for SLURM's commands: name -> shell script body."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)


SACCT_OUT = ("printf '100_0|COMPLETED\\n100_0.batch|COMPLETED\\n100_1|RUNNING\\n"
             "100_[2-3%%2]|PENDING\\n101|CANCELLED by 0\\n'")


def test_slurm_states_and_resubmission_skip_active_jobs(tmp_path, monkeypatch, capsys, shared_tmp):
    """States come from one sacct call (a stand-in here), squeue for what sacct does not
    know; runs of queued or running jobs are not submitted again."""
    from ssl_dynamics.cluster import records

    fake = tmp_path / "bin"
    fake_commands(fake, sacct=SACCT_OUT, squeue="printf '100_1|RUNNING\\n100_2|PENDING\\n100_3|PENDING\\n7|RUNNING\\n'")
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    out = tmp_path / "run"
    ids = ["100_0", "100_1", "100_2", "100_3", "101", "102"]
    runs = [["simclr", 0], ["simclr", 1], ["supervised", 0], ["random_labels", 0],
            ["supervised", 1], ["random_labels", 1]]
    rec = {"kind": "train", "executor": "slurm", "folder": str(out / "jobs" / "20250101-000000-train"),
           "created": "2025-01-01T00:00:00+00:00",
           "jobs": [{"index": i, "job_id": j, "work": {"runs": [r]}, "earlier_ids": []}
                    for i, (j, r) in enumerate(zip(ids, runs))]}
    art.write_json_atomic(out / "jobs" / "20250101-000000-train.json", rec)
    # 102: sacct does not know it (accounting purged), squeue does not list it: ended
    assert records.job_states(rec) == {"100_0": "COMPLETED", "100_1": "RUNNING", "100_2": "PENDING",
                                       "100_3": "PENDING", "101": "CANCELLED by 0",
                                       "102": "ENDED (not in squeue)"}
    assert [j for j, _ in records.active_work(out / "jobs", "train")] == ["100_1", "100_2", "100_3"]
    code, stdout, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *SLURM,
                                        "--runs-per-job", "2", "--dry-run", "--out", str(out))
    assert code == 0, err
    assert "2 run(s) are in jobs still queued or running (100_1, 100_2)" in stdout
    # a job takes runs of one setup: it packs only its own runs, one setup per pack
    assert "job 0: simclr seed 0\njob 1: supervised seed 1\n" in stdout
    assert "2 job(s) would be submitted" in stdout
    # sacct failing (accounting disabled): squeue alone says which jobs still hold work
    fake_commands(fake, sacct="echo 'accounting storage is disabled' >&2; exit 1")
    states = records.job_states(rec)
    assert states["100_1"] == "RUNNING" and states["100_0"] == states["102"] == "ENDED (not in squeue)"
    # neither answering: every job may still run, so none is submitted again, and it says why
    fake_commands(fake, squeue="exit 1")
    assert set(records.job_states(rec).values()) == {records.UNANSWERED}
    code, stdout, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *SLURM,
                                        "--dry-run", "--out", str(out))
    assert code == 0, err
    assert "SLURM gave no state for job(s) 100_0, 100_1, 100_2, 100_3, 101, 102" in stdout
    assert "delete " + str(out / "jobs" / "20250101-000000-train.json") in stdout
    assert "4 run(s) are in jobs still queued or running (100_0, 100_1, 100_2, 101)" in stdout
    # a copy of the run on a machine without SLURM: nothing there can be running
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert set(records.job_states(rec).values()) == {records.NO_SLURM}
    assert records.active_work(out / "jobs", "train") == []


def test_sbatch_refusal_is_one_line_and_leaves_no_record(tmp_path, monkeypatch, capsys, shared_tmp):
    fake = tmp_path / "bin"
    fake_commands(fake, srun="exit 0", sbatch="echo 'sbatch: error: Batch job submission failed: "
                  "Requested time limit is invalid (missing or exceeds some limit)' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    out = tmp_path / "run"
    code, _, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, *SLURM,
                                   "--time", "30d", "--out", str(out))
    assert code == 2, err
    assert err == ("error: slurm refused the submission, nothing was submitted: sbatch: error: Batch job "
                   "submission failed: Requested time limit is invalid (missing or exceeds some limit)\n")
    assert list((out / "jobs").iterdir()) == []  # no record, no folder of pickles


def test_short_time_limits_get_their_signal_before_the_limit(tmp_path):
    for time_, delay in (("1", 30), ("3", 90), ("4", 120), ("4h", 120)):
        opts = from_cli(executor="slurm", partition="gpu", account=None, constraint=None, gpus_per_job=1,
                        cpus_per_job=8, time_=time_, mem=None, array_parallelism=None, job_name=None,
                        max_resubmits=3, wait=None, dry_run=False, default_name="ssl-train")
        assert f"#SBATCH --signal=USR2@{delay}\n" in sbatch_text(opts, tmp_path / "x-train", 1)


def test_a_failed_local_job_says_its_error_and_status_says_failed(tmp_path):
    """Real local jobs: one raises an exception whose name has no 'Error' in it (as the
    training's Diverged has not), one returns."""
    from ssl_dynamics.cluster import executor, records

    opts = from_cli(executor="local", partition=None, account=None, constraint=None, gpus_per_job=0,
                    cpus_per_job=1, time_="10", mem=None, array_parallelism=None, job_name=None,
                    max_resubmits=0, wait=True, dry_run=False, default_name="ssl-train")
    fail = eval("lambda: exec(\"class Diverged(Exception): pass\\nraise Diverged('loss became nan at epoch 1')\")")
    calls = [fail, eval("lambda: 42")]
    work = [{"runs": [["supervised", 0]]}, {"runs": [["supervised", 1]]}]
    said = []
    sub = executor.submit("train", calls, work, opts, tmp_path / "jobs", said.append)
    failures = executor.wait(sub, said.append)
    failed, ok = (str(j.job_id) for j in sub.jobs)
    assert len(failures) == 1 and failures[0].startswith(f"job {failed} (supervised seed 0) failed: ")
    assert "Diverged: loss became nan at epoch 1 (log: " in failures[0]
    rec = records.read_records(tmp_path / "jobs")[0]
    assert records.job_states(rec) == {failed: "FAILED", ok: "FINISHED"}


def test_failure_reason_takes_the_traceback_s_last_line():
    from ssl_dynamics.cluster.executor import failure_reason

    message = ("Job (task=0) failed during processing with trace:\n----------------------\n"
               "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
               "ssl_dynamics.errors.Diverged: 1 run diverged: supervised seed 0\n"
               "----------------------\nYou can check full logs with 'job.stderr(0)' and "
               "'job.stdout(0)'or at paths:\n  - /j/1_0_log.err\n  - /j/1_0_log.out")
    assert failure_reason(message) == "ssl_dynamics.errors.Diverged: 1 run diverged: supervised seed 0"
    assert failure_reason("Job 3 (task: 0) with path /x\nhas not produced any output (state: TIMEOUT)") == \
        "has not produced any output (state: TIMEOUT)"


def test_records_find_their_jobs_from_anywhere(tmp_path, monkeypatch, reference):
    """A record written with a relative folder (from another working directory) or in a run
    directory that was moved still finds its jobs' results; `train status --work` shows the
    jobs of `inspect submit rt --work`."""
    from ssl_dynamics.cluster import records

    jobs = tmp_path / "moved" / "inspect" / "jobs"
    (jobs / "20250101-000000-rt" / "123").mkdir(parents=True)
    art.write_json_atomic(jobs / "20250101-000000-rt.json", {
        "kind": "rt", "executor": "local", "folder": "runs/try/inspect/jobs/20250101-000000-rt",
        "created": "2025-01-01T00:00:00+00:00",
        "jobs": [{"index": 0, "job_id": "123", "work": {"shard": "0/1"}, "earlier_ids": []}]})
    import pickle

    (jobs / "20250101-000000-rt" / "123" / "123_0_result.pkl").write_bytes(pickle.dumps(("success", None)))
    monkeypatch.chdir(tmp_path)
    assert records.status_lines(jobs)[0].split()[3] == "FINISHED"
    work = str(jobs.parent)
    shown = CliRunner().invoke(train_cli, ["status", str(reference), "--work", work, "--work", work + "/"])
    assert shown.exit_code == 0, shown.output
    listed = [ln for ln in shown.output.splitlines() if ln.split()[3:] == ["FINISHED", "r_t", "shard", "0/1"]]
    assert len(listed) == 1  # a folder named twice is read once


def test_rt_shards_of_other_setups_are_not_busy_and_other_shard_counts_are_refused():
    from ssl_dynamics.inspect.submit import busy_shards

    store = "/shared/run/inspect/rt.zarr"
    running = [("11", {"shard": "0/2", "store": store, "setups": ["supervised"], "epochs": None}),
               ("12", {"shard": "1/2", "store": store, "setups": ["supervised"], "epochs": [1, 2]}),
               ("13", {"shard": "1/2", "store": "/elsewhere.zarr", "setups": ["random_labels"], "epochs": None}),
               ("14", {"shard": "0/2", "store": store})]  # a record of before: overlaps everything
    mine = {"setups": ["random_labels"], "epochs": None}
    assert busy_shards(running, store, 2, mine) == {"0/2": "14"}
    assert busy_shards(running[:3], store, 2, {"setups": ["supervised"], "epochs": [3]}) == {"0/2": "11"}
    assert busy_shards(running[:3], store, 2, {"setups": ["supervised"], "epochs": [2, 3]}) == \
        {"0/2": "11", "1/2": "12"}
    with pytest.raises(UserError, match=r"^job 14 of an earlier submission evaluates this store in 2 "
                                        r"shards: submit with --shards 2, or once it has ended$"):
        busy_shards(running, store, 4, mine)  # job 14 overlaps; 11 and 12 (supervised) do not
    assert busy_shards(running[:3], store, 4, mine) == {}  # other setups: any shard count


def test_the_next_step_named_after_inspect_submit_rt_reads_that_store(tmp_path, reference):
    """The hint is the `inspect all` that reads what the jobs wrote: it carries --work,
    --store, --bank, --setup and --precision."""
    for extra, said in ((["--work", str(tmp_path / "w1"), "--store", str(tmp_path / "s.zarr"),
                          "--bank", str(tmp_path / "b.h5")],
                         f"inspect all {reference} --work {tmp_path / 'w1'} --store {tmp_path / 's.zarr'} "
                         f"--bank {tmp_path / 'b.h5'} --setup supervised\n"),
                        (["--setup", "supervised", "--work", str(tmp_path / "w")],
                         f"inspect all {reference} --work {tmp_path / 'w'} --setup supervised\n")):
        r = run("inspect", "submit", "rt", str(reference), "--shards", "1", *LOCAL, "--probes", "16",
                "--replays", "2", "--setup", "supervised", "--epochs", "0", *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        assert said in r.stdout, r.stdout


def test_signal_handlers_are_set_for_the_block_and_only_from_the_main_thread():
    import signal
    import threading

    from ssl_dynamics.train.workers import _as_interrupt, _handling

    before = signal.getsignal(signal.SIGHUP)
    with _handling({signal.SIGHUP: _as_interrupt}):
        assert signal.getsignal(signal.SIGHUP) is _as_interrupt
    assert signal.getsignal(signal.SIGHUP) is before
    seen = []

    def elsewhere():  # signal.signal would raise ValueError outside the main thread
        with _handling({signal.SIGHUP: _as_interrupt}):
            seen.append(signal.getsignal(signal.SIGHUP))

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert seen == [before]


def test_local_jobs_planned_for_a_gpu_on_a_machine_without_one_are_refused(tmp_path, monkeypatch, capsys,
                                                                          reference):
    """--gpus-per-job defaults to 1; on a machine without a GPU the local jobs trained on the
    CPU in GPU-sized packs, silently."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = "--gpus-per-job 1 (the default is 1): this machine has no GPU; give --gpus-per-job 0"
    code, _, err = main_in_process(monkeypatch, capsys, "train", "submit", *GRID, "--out", str(tmp_path / "r"),
                                   "--executor", "local")
    assert code == 2 and message in err and not (tmp_path / "r").exists(), err
    code, _, err = main_in_process(monkeypatch, capsys, "inspect", "submit", "rt", str(reference),
                                   "--work", str(tmp_path / "w"), "--executor", "local")
    assert code == 2 and message in err and not (tmp_path / "w").exists(), err

"""A work folder belongs to one run, the analyses read the store `inspect rt` fills, the
representation cache survives damage, and analysis.h5 survives concurrent writers, a full
disk, damage and killed writes."""
import errno
import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from _util import private_copy, quiet
from click.testing import CliRunner

from ssl_dynamics import artifacts as art
from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect.cli import cli
from ssl_dynamics.inspect.outputs import Outputs

INSPECT = [sys.executable, "-c", "from ssl_dynamics.inspect.cli import main; main()"]


def one_line_exit_2(*args) -> str:
    r = subprocess.run(INSPECT + [str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, (r.returncode, r.stderr)
    return r.stderr


def set_store_dataset(store, sha: str) -> None:
    """Make the r_t store look evaluated on another dataset (another run's store)."""
    import zarr

    root = zarr.open_group(str(store), mode="r+")
    for s in root.group_keys():
        root[s].attrs["dataset_sha256"] = sha
    with warnings.catch_warnings():  # zarr: consolidated metadata is not in the v3 spec yet
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store))


def test_a_store_of_another_dataset_is_refused_naming_both(tiny_rt, tmp_path):
    run = private_copy(tiny_rt, tmp_path)
    set_store_dataset(run / "inspect" / "rt.zarr", "ab" * 32)
    err = one_line_exit_2("dynamics", run)
    assert "abababababab" in err and "another run's store" in err
    mine = json.loads((run / "run.json").read_text())["dataset"]["sha256"]
    assert mine[:12] in err


def test_a_work_folder_of_another_run_is_refused(tiny_rt, tmp_path):
    a = private_copy(tiny_rt, tmp_path, "a")
    b = private_copy(tiny_rt, tmp_path, "b")
    meta = json.loads((b / "run.json").read_text())
    meta["created"] = "2020-01-01T00:00:00+00:00"  # another run with the same data
    (b / "run.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(cli, ["classes", str(a)])  # the first output records the run
    assert r.exit_code == 0, r.output
    assert json.loads((a / "inspect" / "work.json").read_text())["run"]["created"] != meta["created"]
    err = one_line_exit_2("classes", b, "--work", a / "inspect")
    assert "another run" in err and "--work" in err


def test_a_refused_command_records_nothing(tiny_rt, tmp_path):
    run = private_copy(tiny_rt, tmp_path)
    one_line_exit_2("dynamics", run, "--reference", "foo")
    assert not (run / "inspect" / "work.json").exists()


def test_a_refused_command_leaves_no_new_work_folder(tiny_rt, tmp_path):
    new = tmp_path / "new" / "work"
    one_line_exit_2("all", tiny_rt, "--work", new, "--replays", "0")
    assert not (tmp_path / "new").exists()  # the folders it made for --work are gone
    kept = tmp_path / "kept"
    kept.mkdir()
    one_line_exit_2("all", tiny_rt, "--work", kept, "--replays", "0")
    assert kept.is_dir()  # a folder that was there before is left alone


def test_only_created_folders_without_files_are_removed(tmp_path):
    earlier = tmp_path / "earlier"
    art.check_writable(earlier)  # made by an earlier command of this process: not ours
    mark = art.created_folders()
    empty, used, before = tmp_path / "a" / "b", tmp_path / "used" / "x", tmp_path / "before"
    before.mkdir()
    for folder in (empty, used, before):
        art.check_writable(folder)
    (used / "sub").mkdir()
    (used / "sub" / "file").write_text("kept")
    (tmp_path / "a" / "b" / "c").mkdir()  # an empty subfolder goes with its empty parent
    art.remove_unused_folders(since=mark)
    assert not (tmp_path / "a").exists() and before.is_dir() and earlier.is_dir()
    assert (used / "sub" / "file").read_text() == "kept"
    assert art.created_folders() == mark  # the record is emptied down to the mark


def test_a_command_that_succeeds_keeps_the_folder_it_made(tmp_path, monkeypatch):
    import click

    from ssl_dynamics.cli_util import run_cli

    @click.group()
    def group():
        pass

    @group.command()
    @click.argument("where")
    @click.option("--fail", is_flag=True)
    def make(where, fail):
        art.check_writable(Path(where))
        if fail:
            raise UserError("refused")

    for fail, kept in ((False, True), (True, False)):
        target = tmp_path / f"made-{fail}"
        monkeypatch.setattr(sys, "argv", ["prog", "make", str(target)] + ["--fail"] * fail)
        with pytest.raises(SystemExit) as e:
            run_cli(group, "rerun")
            raise SystemExit(0)
        assert (e.value.code == 0) is kept and target.is_dir() is kept


def test_the_report_says_which_store_each_analysis_read(tiny_rt, tmp_path):
    run = private_copy(tiny_rt, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for args in (["dynamics", run], ["classes", run],
                 ["rt", run, "--store", other / "rt.zarr", "--bank", other / "bank.h5", "--probes", "16", "--simclr-batch", "8"]):
        r = CliRunner().invoke(cli, [str(a) for a in args] + ["--no-progress"] * (args[0] == "rt"))
        assert r.exit_code == 0, r.output
    page = run / "inspect" / "report" / "index.html"
    assert "note:" not in CliRunner().invoke(cli, ["report", str(run)]).output
    one = "r_t of dynamics, classes: rt.zarr (24 probe images x 3 replays)."  # the work folder's own
    assert one in page.read_text()
    r = CliRunner().invoke(cli, ["classes", str(run), "--store", str(other / "rt.zarr")])
    assert r.exit_code == 0 and "note: other analyses in" in r.output and "read another r_t store" in r.output
    CliRunner().invoke(cli, ["report", str(run)])
    text = page.read_text()
    assert "These analyses read 2 different r_t stores" in text
    assert "<b>dynamics</b>: rt.zarr (24 probe images" in text
    assert f"<b>classes</b>: {(other / 'rt.zarr').resolve()} (16 probe images x 10 replays)" in text
    r = CliRunner().invoke(cli, ["classes", str(run)])  # back to one store: one line again
    CliRunner().invoke(cli, ["report", str(run)])
    assert one in page.read_text() and "different r_t stores" not in page.read_text()
    sources = json.loads((run / "inspect" / "sources.json").read_text())
    live = set(json.loads((run / "inspect" / "outputs.json").read_text()).values())
    assert live <= set(sources) and len(set(sources) - live) == 1  # pruned as each command starts
    # the same evaluations through its .h5 export are the same store, not a second one
    from ssl_dynamics.inspect.rtdata import export_h5
    from ssl_dynamics.inspect.store import RtStore

    export_h5(RtStore(run / "inspect" / "rt.zarr", writable=False), tmp_path / "same.h5")
    r = CliRunner().invoke(cli, ["classes", str(run), "--store", str(tmp_path / "same.h5")])
    assert r.exit_code == 0 and "read another r_t store" not in r.output, r.output
    CliRunner().invoke(cli, ["report", str(run)])
    assert "different r_t stores" not in page.read_text()


def test_rt_fills_the_h5_archive_the_analyses_read(tiny_rt, tmp_path):
    """A work folder holding rt.h5 (no rt.zarr): `inspect rt` adds to that archive instead of
    evaluating every checkpoint again into a new rt.zarr."""
    import shutil

    from ssl_dynamics.inspect.rtdata import export_h5
    from ssl_dynamics.inspect.store import RtStore

    run = private_copy(tiny_rt, tmp_path)
    work = run / "inspect"
    export_h5(RtStore(work / "rt.zarr", writable=False), work / "rt.h5")
    shutil.rmtree(work / "rt.zarr")
    r = CliRunner().invoke(cli, ["rt", str(run), "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "0 checkpoints to evaluate" in r.output and "rt.h5" in r.output
    assert not (work / "rt.zarr").exists()
    # rt.zarr asked for by name (what `inspect submit rt` fills: shards need Zarr) starts
    # from that archive too, instead of evaluating everything again
    r = CliRunner().invoke(cli, ["rt", str(run), "--device", "cpu", "--no-progress",
                                 "--store", str(work / "rt.zarr")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "0 checkpoints to evaluate" in r.output and (work / "rt.zarr").is_dir()


def extract_one(ws, verify=True, echo=quiet):
    from ssl_dynamics.inspect.features import FeatureCache

    return FeatureCache(ws, "cpu", verify=verify, echo=echo).get("supervised", 0, 1)


def test_feature_cache_notices_a_replaced_checkpoint_without_verify(tiny_run, tmp_path):
    import zarr

    from ssl_dynamics.inspect.workspace import open_workspace

    ws = open_workspace(private_copy(tiny_run, tmp_path), echo=quiet)
    first = extract_one(ws, verify=False)
    entry = zarr.open_group(str(ws.features / "supervised/seed-00/epoch-0001"), mode="r+")
    entry.attrs["checkpoint_sha256"] = "0" * 64  # cached from a checkpoint replaced since
    said = []
    again = extract_one(ws, verify=False, echo=said.append)
    assert any("checkpoint changed" in s for s in said)
    assert np.array_equal(first[0], again[0])
    entry = zarr.open_group(str(ws.features / "supervised/seed-00/epoch-0001"), mode="r")
    assert entry.attrs["checkpoint_sha256"] == art.manifest_sha256(
        ws.run.paths.checkpoint("supervised", 0, 1))


def test_damaged_feature_cache(tiny_run, tmp_path):
    """A damaged entry is extracted again; a damaged root is one line naming it, exit 2."""
    from ssl_dynamics.inspect.features import FeatureCache
    from ssl_dynamics.inspect.workspace import open_workspace

    run = private_copy(tiny_run, tmp_path)
    ws = open_workspace(run, echo=quiet)
    first = extract_one(ws)
    (ws.features / "supervised/seed-00/epoch-0001/zarr.json").write_text("")
    said = []
    assert np.array_equal(extract_one(ws, echo=said.append)[0], first[0])
    assert any("damaged cached features" in s for s in said)
    (ws.features / "zarr.json").write_text("")
    FeatureCache(ws, "cpu", echo=quiet)  # opening is lazy: no error before the cache is read
    with pytest.raises(UserError, match="damaged representation cache .*features.zarr"):
        extract_one(ws)
    err = one_line_exit_2("probe", run, "--device", "cpu", "--setup", "supervised")
    assert "features.zarr" in err


def test_bank_refusals_say_what_differs(tiny_rt, tmp_path):
    run = private_copy(tiny_rt, tmp_path)
    bank = run / "inspect" / "bank.h5"
    err = one_line_exit_2("rt", run, "--probes", "64", "--no-progress")
    assert "--probes 64 (48 after capping at the training set's 48 images), the bank has 24" in err
    with h5py.File(bank, "r+") as f:
        f.attrs["dataset_sha256"] = "cd" * 32  # another run's bank
    err = one_line_exit_2("rt", run, "--no-progress")
    assert "another dataset" in err and "cdcdcdcdcdcd" in err and "drop those options" not in err


RACE = """
import sys, numpy as np
from ssl_dynamics.inspect.outputs import Outputs
out = Outputs(sys.argv[1])
for i in range(int(sys.argv[3])):
    out.write_arrays(f"{sys.argv[2]}{i}", {"a": np.random.rand(5000)})
"""


def test_concurrent_writers_keep_every_group(tmp_path):
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), name, str(n)])
             for name in ("a", "b")]
    assert [p.wait() for p in procs] == [0, 0]
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        assert len(f) == 2 * n


def test_a_full_disk_keeps_the_old_analysis_file(tmp_path, monkeypatch):
    out = Outputs(tmp_path)
    out.write_arrays("old", {"a": np.arange(3)})
    before = out.analysis.read_bytes()
    script = ("import resource, signal, sys, numpy as np\n"
              "from ssl_dynamics.inspect.outputs import Outputs\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
              "try:\n"
              "    Outputs(sys.argv[1]).write_arrays('big', {'a': np.random.rand(100_000)})\n"
              "except OSError as e:\n"
              f"    sys.exit(7 if e.errno in {art.atomic.NO_SPACE_ERRNOS} else 8)\n")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 7, r.stderr[-2000:]  # the writer's own OSError, not HDF5's crash
    assert out.analysis.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
    assert errno.EFBIG in art.atomic.NO_SPACE_ERRNOS


def test_a_damaged_analysis_file_is_moved_aside(tmp_path, capsys):
    (tmp_path / "analysis.h5").write_bytes(b"not hdf5 at all")
    Outputs(tmp_path).write_arrays("dynamics", {"a": np.arange(3)})
    aside = list(tmp_path.glob("analysis.h5.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not hdf5 at all"
    assert "analysis.h5.corrupt-" in capsys.readouterr().out
    with h5py.File(tmp_path / "analysis.h5", "r") as f:
        assert list(f) == ["dynamics"]


def test_a_command_removes_what_killed_writers_left(tmp_path):
    left = [tmp_path / ".analysis.h5.k1.tmp", tmp_path / ".skipped.json.k2.tmp",
            tmp_path / "figures" / ".fig4_1_sorted_rt.png.k3.tmp",
            tmp_path / "tables" / ".class_rt.json.k4.tmp", tmp_path / "tables" / ".class_rt.csv.k5.tmp",
            tmp_path / "report" / ".index.html.k6.tmp", tmp_path / "tables" / ".examples.parquet.k7.tmp"]
    kept = [tmp_path / ".bank.h5.k8.tmp"]
    for p in left + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    Outputs(tmp_path).write_table("class_rt", [{"setup": "simclr"}])
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept)  # another writer's (the bank has its own lock)


def test_a_failed_step_names_the_command_that_runs_it():
    from ssl_dynamics.inspect.pipeline import run_step

    def boom():
        raise RuntimeError("x")

    skipped = []
    run_step("tsne", boom, skipped, quiet)
    assert "`inspect embed` alone" in skipped[0]["reason"]


def test_all_says_which_analyses_epoch_reaches():
    r = CliRunner().invoke(cli, ["all", "--help"])
    assert "probe, embed (t-SNE, KL) and activations" in " ".join(r.output.split())
    assert "--redo" in r.output

"""Phase one on a damaged or oddly used run directory: deleted run.json/setup.json, lost
checkpoints and manifests, malformed resume states and records, absurd options. Each is
refused with one line (nothing changed) or reported by `train status`, never trained over."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from _util import main_result, private_copy, quiet
from ssl_dynamics import artifacts as art
from ssl_dynamics.config import override, preset
from ssl_dynamics.errors import UserError, WorkFailed
from ssl_dynamics.train import cli as train_cli
from ssl_dynamics.train.grid import Job, start_line, train_grid
from ssl_dynamics.train.loop import TrainOptions

CPU = TrainOptions(device="cpu", deterministic=True)
SMOKE = ["--preset", "smoke", "--set", "train_subset=48", "--set", "batch_size=16", "--epochs", "2",
         "--seeds", "0", "--setup", "supervised", "--no-progress"]


def tiny(epochs=2):
    """SMOKE as a config: 48 synthetic images, width 4, seed 0."""
    cfg = override(preset("smoke"), [f"epochs={epochs}", "batch_size=16", "train_subset=48"])
    return replace(cfg, seeds=(0,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage") / "run"
    train_grid(root, tiny(), ["supervised"], CPU, progress=False, echo=quiet)
    return root


@pytest.fixture
def run(trained, tmp_path):
    return private_copy(trained, tmp_path)


def call(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """`train ...` as a user runs it, in this process: (exit status, stdout, stderr)."""
    return main_result(train_cli.main, args, monkeypatch, capsys, "train")


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def refused(args, root, monkeypatch, capsys, message) -> None:
    before = snapshot(root)
    code, _, err = call(args, monkeypatch, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert snapshot(root) == before


# --------------------------------------------------------------------------- run.json, setup.json

def test_a_deleted_setup_json_is_never_replaced_by_other_settings(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    original = paths.setup_json("supervised").read_bytes()
    paths.setup_json("supervised").unlink()
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 2 and "supervised: damaged: seed folders but no setup.json" in out
    assert err == "error: 1 setup(s) damaged (their lines above say how to recover)\n", err
    assert "; 1 damaged setup not in the table (below)" in out  # the summary counts it too
    refused(["run", "--out", run, *SMOKE, "--set", "supervised.lr=0.5"], run, monkeypatch, capsys,
            "setup.json is missing, and supervised's checkpoints were made with a different config (lr differs)")
    # the same settings: setup.json is written again, as it was, and the seed is complete
    code, _, err = call(["run", "--out", run, *SMOKE], monkeypatch, capsys)
    assert code == 0, err
    assert paths.setup_json("supervised").read_bytes() == original
    assert [s.condition for s in art.grid_status(run)] == ["complete"]


def test_a_deleted_setup_json_without_checkpoints_to_read_is_refused(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    paths.setup_json("supervised").unlink()
    for epoch in (0, 1, 2):
        paths.checkpoint("supervised", 0, epoch).unlink()
    refused(["run", "--out", run, *SMOKE], run, monkeypatch, capsys,
            "is missing and no committed checkpoint of supervised records its settings")


def test_a_setup_folder_holding_only_seed_locks_is_not_damaged(run, monkeypatch, capsys):
    """What a change of untrained settings leaves of a setup it forgot: seed folders with
    their lock files (kept, so a lock keeps meaning one file)."""
    paths = art.RunPaths(run)
    paths.seed_lock("random_labels", 0).parent.mkdir(parents=True)
    paths.seed_lock("random_labels", 0).touch()
    assert paths.unconfigured() == []
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert code == 0 and "damaged" not in out


def test_a_deleted_run_json_is_refused_whatever_the_settings(run, monkeypatch, capsys):
    art.RunPaths(run).run_json.unlink()
    for extra in ([], ["--set", "width=8"]):
        refused(["run", "--out", run, *SMOKE, *extra], run, monkeypatch, capsys,
                "holds trained checkpoints but no run.json")


def test_provenance_keeps_the_first_invocation_and_adds_each_other_environment_once(tmp_path, monkeypatch):
    from ssl_dynamics.train import prepare

    cfg = tiny(epochs=1)
    train_grid(tmp_path, cfg, ["supervised"], CPU, progress=False, echo=quiet)
    first = art.read_json(art.RunPaths(tmp_path).run_json)["provenance"]
    monkeypatch.setattr(prepare.platform, "node", lambda: "another-node")
    for _ in range(2):  # a resume elsewhere, twice: recorded once
        train_grid(tmp_path, cfg, ["supervised"], CPU, progress=False, echo=quiet)
    run_json = art.read_json(art.RunPaths(tmp_path).run_json)
    assert run_json["provenance"] == first
    assert [p["host"] for p in run_json["provenance_later"]] == ["another-node"]
    assert "first_seen" in run_json["provenance_later"][0]


# --------------------------------------------------------------------------- checkpoints, manifests

def test_status_names_a_committed_checkpoint_that_is_gone(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    paths.checkpoint("supervised", 0, 1).unlink()
    paths.checkpoint("supervised", 0, 2).write_bytes(b"")  # emptied (e.g. a failed copy)
    st = art.grid_status(run)[0]
    assert (st.state, st.condition, st.lost) == ("complete", "damaged", (1, 2))
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: 1 run(s) damaged: restore their files") and err.count("\n") == 1
    assert "damaged" in out and "2 committed checkpoint(s) missing or truncated (epoch 1, 2)" in out
    assert "0 complete, 0 partial, 0 missing, 1 damaged" in out


def test_a_truncated_checkpoint_is_damaged_and_train_run_says_so(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    ckpt = paths.checkpoint("supervised", 0, 1)
    ckpt.write_bytes(ckpt.read_bytes()[:-100])  # a copy cut short
    st = art.grid_status(run, sizes=True)[0]
    assert (st.condition, st.lost) == ("damaged", (1,))
    appended = paths.checkpoint("supervised", 0, 2)
    appended.write_bytes(appended.read_bytes() + b"\0")
    assert art.grid_status(run, sizes=True)[0].lost == (1, 2)
    # a rerun trains what is left, then does not call the damaged seed complete (it was: exit 0)
    before = snapshot(run)
    code, out, err = call(["run", "--out", run, *SMOKE], monkeypatch, capsys)
    assert code == 2 and "done: 0/1 runs complete" in out, out + err
    assert err.count("\n") == 1 and "1 run(s) damaged: supervised seed 0: 2 committed checkpoint(s) " \
        "missing or truncated (epoch 1, 2). Restore the files from a copy, or delete each such " \
        "seed's folder" in err, err
    assert snapshot(run) == before
    code, _, err = call(["extend", run, "--setup", "supervised", "--to", "3", "--device", "cpu",
                         "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "epoch-0002.safetensors: its sha256 differs from the one recorded when " \
        "it was written; restore it from a copy, or delete" in err, err  # the epoch it continues from
    # the way out it names: delete the seed's folder, and the rerun trains it again
    import shutil

    shutil.rmtree(paths.seed_dir("supervised", 0))
    code, out, err = call(["run", "--out", run, *SMOKE], monkeypatch, capsys)
    assert code == 0 and "done: 1/1 runs complete" in out, out + err


def test_status_names_checkpoints_without_a_manifest(run, monkeypatch, capsys):
    art.RunPaths(run).manifest("supervised", 0).unlink()
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert code == 2 and "no manifest.json, checkpoints up to epoch 2 on disk" in out
    assert art.grid_status(run)[0].condition == "damaged"


def test_an_undamaged_run_shows_no_damage(run, monkeypatch, capsys):
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert code == 0 and "damaged" not in out and "1 complete, 0 partial, 0 missing" in out


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["checkpoints"].update({"one": "ab"}), "checkpoint entry 'one' is not epoch number -> sha256"),
    (lambda m: m["checkpoints"].update({"3": 7}), "checkpoint entry '3' is not epoch number -> sha256"),
    (lambda m: m.update(complete="yes"), "'complete' is not true or false"),
])
def test_a_malformed_manifest_is_refused_with_its_name(run, monkeypatch, capsys, edit, message):
    path = art.RunPaths(run).manifest("supervised", 0)
    m = art.read_json(path)
    edit(m)
    path.write_text(json.dumps(m))
    refused(["run", "--out", run, *SMOKE], run, monkeypatch, capsys, f"corrupt manifest {path}: {message}")
    # status shows the whole table, the seed as damaged and why, then exits 2
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: 1 run(s) damaged: restore their files") and err.count("\n") == 1
    row = next(line for line in out.splitlines() if line.startswith("supervised"))
    assert row.split()[:4] == ["supervised", "0", "damaged", "-/2"] and \
        row.endswith(f"corrupt manifest {path}: {message}"), out


def test_status_shows_the_table_when_a_manifest_is_not_json(run, monkeypatch, capsys):
    """A manifest cut short, or a folder in its place: its seed's row says so."""
    path = art.RunPaths(run).manifest("supervised", 0)
    path.write_text('{"checkpoints": {')
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"corrupt JSON file {path}: Expecting property name enclosed in double quotes: line 1 column 18" in out
    assert "0 complete, 0 partial, 0 missing, 1 damaged" in out
    with pytest.raises(UserError, match="corrupt JSON file"):  # training and phase two still refuse it
        art.grid_status(run)
    path.unlink()
    path.mkdir()  # a folder where the manifest belongs: a damaged row too
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert code == 2 and f"{path} cannot be read (Is a directory)" in out, out


def _resume_again(run: Path) -> art.RunPaths:
    """Mark the seed incomplete so that `train run` opens its resume state."""
    paths = art.RunPaths(run)
    m = art.read_json(paths.manifest("supervised", 0))
    m["complete"] = False
    art.write_json_atomic(paths.manifest("supervised", 0), m)
    return paths


@pytest.mark.parametrize("edit", [
    lambda s: s.update(epoch="2"), lambda s: s.update(epoch=True), lambda s: s.update(epoch=-1),
    lambda s: s.pop("optimizer"), lambda s: s.update(optimizer={"state": []}),
    lambda s: s.update(checkpoint_sha256=3),
])
def test_a_malformed_resume_state_is_refused(run, monkeypatch, capsys, edit):
    paths = _resume_again(run)
    state = torch.load(paths.resume("supervised", 0), weights_only=True)
    edit(state)
    art.save_resume(paths.resume("supervised", 0), state)
    refused(["run", "--out", run, *SMOKE], run, monkeypatch, capsys, "is unreadable or malformed")


def test_an_older_resume_state_put_back_is_refused(run, tmp_path, monkeypatch, capsys):
    """A resume state older than the manifest's last epoch would retrain (and so rewrite)
    committed epochs: refused. Only the layout of older versions, which wrote resume.pt
    (without the checkpoint's sha256) after the manifest, lags one epoch after a kill: that
    epoch is redone, to the same bytes."""
    short = tmp_path / "short"
    train_grid(short, tiny(epochs=1), ["supervised"], CPU, progress=False, echo=quiet)
    paths = _resume_again(run)
    older = art.RunPaths(short).resume("supervised", 0)
    paths.resume("supervised", 0).write_bytes(older.read_bytes())
    refused(["run", "--out", run, *SMOKE], run, monkeypatch, capsys,
            "is of epoch 1, but the manifest has committed epoch 2: it is an older copy")
    legacy = torch.load(older, weights_only=True)
    del legacy["checkpoint_sha256"]
    art.save_resume(paths.resume("supervised", 0), legacy)
    last = paths.checkpoint("supervised", 0, 2).read_bytes()
    paths.checkpoint("supervised", 0, 2).unlink()  # so that only a redone epoch 2 brings it back
    code, out, err = call(["run", "--out", run, *SMOKE], monkeypatch, capsys)
    assert code == 0, err
    assert paths.checkpoint("supervised", 0, 2).read_bytes() == last
    assert [s.condition for s in art.grid_status(run)] == ["complete"]


# --------------------------------------------------------------------------- options

def test_disk_estimate_needs_no_memory_for_the_network(monkeypatch, capsys, tmp_path):
    """The estimate reads shapes only (a meta network): equal to the real state dict's bytes,
    and a huge width is refused by the disk check instead of allocating the network."""
    from ssl_dynamics.models import build_network
    from ssl_dynamics.train.prepare import METADATA_SLACK, checkpoint_bytes

    cfg = tiny()
    for dtype in ("fp32", "bf16"):
        sc = cfg.setups["supervised"]
        net = build_network(cfg.backbone, sc.head_dim, cfg.width)
        state = art.model_state(net, art.CHECKPOINT_DTYPES[dtype])
        want = sum(t.numel() * t.element_size() for t in state.values()) + METADATA_SLACK
        assert checkpoint_bytes(cfg, sc, dtype)[0] == want
    out = tmp_path / "wide"
    code, _, err = call(["run", "--out", out, *SMOKE, "--set", "width=100000"], monkeypatch, capsys)
    assert code == 2 and "not enough disk space" in err and "TiB" in err


def test_out_of_memory_is_one_line(monkeypatch, capsys, tmp_path):
    from ssl_dynamics.train import grid

    def no_memory(*args, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(grid, "train_seed", no_memory)
    code, _, err = call(["run", "--out", tmp_path / "run", *SMOKE], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: out of memory") and err.count("\n") == 1, err


@pytest.mark.parametrize("args, message", [
    (["--to", "0"], "0 is not in the range x>=1"),
    (["--to", "-3"], "is not in the range x>=1"),
    (["--to", "4", "--seeds", ""], "malformed seed range ''"),
])
def test_extend_refuses_absurd_targets_and_empty_seeds(run, monkeypatch, capsys, args, message):
    refused(["extend", run, "--setup", "supervised", "--device", "cpu", *args], run, monkeypatch,
            capsys, message)


def test_extend_to_an_epoch_not_beyond_the_plan_is_refused(run, monkeypatch, capsys):
    refused(["extend", run, "--setup", "supervised", "--to", "2", "--device", "cpu"], run,
            monkeypatch, capsys, "supervised already plans 2 epochs; --to must be larger")


def test_status_tells_an_extension_that_was_cut_short(run, monkeypatch, capsys):
    from ssl_dynamics.train import loop

    real = loop.run_epoch

    def stop_in_epoch_4(state, *args, **kw):
        if state.epoch == 3:
            raise KeyboardInterrupt
        return real(state, *args, **kw)

    monkeypatch.setattr(loop, "run_epoch", stop_in_epoch_4)
    code, _, err = call(["extend", run, "--setup", "supervised", "--to", "5", "--device", "cpu",
                         "--no-progress"], monkeypatch, capsys)
    assert code == 130, err
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert "extended to 3  (`train extend --to 5` unfinished)" in out
    code, _, err = call(["extend", run, "--setup", "supervised", "--to", "3", "--device", "cpu",
                         "--no-progress"], monkeypatch, capsys)  # nothing to train
    assert code == 0, err
    code, out, _ = call(["status", run], monkeypatch, capsys)  # the farthest asked still stands
    assert "extended to 3  (`train extend --to 5` unfinished)" in out
    monkeypatch.setattr(loop, "run_epoch", real)
    code, _, err = call(["extend", run, "--setup", "supervised", "--to", "5", "--device", "cpu",
                         "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert "extended to 5" in out and "unfinished" not in out


def test_the_start_line_names_each_seeds_own_epoch():
    def jobs(*done):
        return [Job("simclr", i, d, 6) for i, d in enumerate(done)]

    assert start_line(jobs(-1, -1), 6) == "from scratch to epoch 6"
    assert start_line(jobs(2, 2), 6) == "resuming after epoch 2, to 6"
    assert start_line(jobs(6), 6) == "epoch 6 was trained before a kill; entering it in the manifest"
    assert start_line(jobs(-1, 2, 4), 6) == \
        "resuming from scratch, after epoch 2, after epoch 4 respectively, to 6"


def test_cifar_data_root_that_is_a_file_or_absent_without_download(tmp_path):
    from ssl_dynamics.data import load_cifar10

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file; give the folder"):
        load_cifar10(f, download=False)
    with pytest.raises(UserError, match="and downloading is off"):
        load_cifar10(tmp_path / "empty", download=False)


# --------------------------------------------------------------------------- workers, records

def test_workers_that_all_refuse_are_a_refusal_not_a_failure(tmp_path, monkeypatch):
    from ssl_dynamics.train import workers
    from ssl_dynamics.train.loop import TrainRequest

    cfg = tiny()
    for codes, error in (([2, 2], UserError), ([2, 1], WorkFailed)):
        monkeypatch.setattr(workers, "_run", lambda specs, codes=codes: list(zip(specs, codes)))
        with pytest.raises(error) as e:
            workers.run_on_devices(tmp_path / "run", cfg, ["supervised"], ["cpu", "cpu"],
                                   TrainRequest(device="cpu"), echo=quiet, progress=False)
        assert ("stopped on an error" in str(e.value)) == (error is UserError)
        assert "0/1 runs complete, a rerun resumes the rest" in str(e.value)


@pytest.mark.parametrize("record", [
    {"jobs": "many", "folder": "x"},
    {"jobs": [{"work": {}}], "folder": "x"},  # no job id
    {"jobs": [{"job_id": "1", "work": {"runs": [["simclr", "zero"]]}}], "folder": "x"},
    {"jobs": [{"job_id": "1", "work": {"shard": "two"}}], "folder": "x"},
    {"jobs": [{"job_id": "1", "earlier_ids": "0"}], "folder": "x"},
])
def test_a_damaged_submission_record_is_listed_not_a_traceback(run, monkeypatch, capsys, record):
    from ssl_dynamics.cluster import records

    jobs = art.RunPaths(run).jobs
    art.write_json_atomic(jobs / "20250101-000000-train.json", record)
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 0, err
    assert f"damaged record {jobs / '20250101-000000-train.json'} (not read)" in out
    said = []
    assert records.active_work(jobs, "train", said.append) == []
    assert len(said) == 1 and "damaged submission record" in said[0]


def test_a_bad_value_in_a_stored_setup_json_names_the_file(run, monkeypatch, capsys):
    path = art.RunPaths(run).setup_json("supervised")
    d = art.read_json(path)
    d["lr"] = -1
    path.write_text(json.dumps(d))
    for args in (["status", run], ["run", "--out", run, *SMOKE]):
        refused(args, run, monkeypatch, capsys, f"corrupt {path}: setup supervised: lr must be > 0.0")


def test_inspect_warns_of_a_setup_folder_without_setup_json(run, tmp_path):
    from ssl_dynamics.inspect.workspace import open_workspace

    train_grid(run, tiny(), ["random_labels"], CPU, progress=False, echo=quiet)
    art.RunPaths(run).setup_json("random_labels").unlink()
    said = []
    ws = open_workspace(run, tmp_path / "work", echo=said.append)
    assert list(ws.run.cfg.setups) == ["supervised"]
    assert len(said) == 1 and "random_labels is left out" in said[0] and "no setup.json" in said[0]


def test_a_setup_json_of_a_newer_schema_is_refused(run, monkeypatch, capsys):
    path = art.RunPaths(run).setup_json("supervised")
    d = art.read_json(path)
    d["schema_version"] = 99
    path.write_text(json.dumps(d))
    for args in (["status", run], ["run", "--out", run, *SMOKE]):
        refused(args, run, monkeypatch, capsys, "written under schema 99, by a newer version")


def test_status_names_setup_folders_gone_or_copied(run, monkeypatch, capsys):
    import shutil

    paths = art.RunPaths(run)
    shutil.copytree(paths.setup_dir("supervised"), paths.checkpoints / "supervised.bak")
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 0, err
    assert "checkpoints/supervised.bak: not a setup of this run" in out
    assert "1 complete, 0 partial, 0 missing" in out
    shutil.rmtree(paths.setup_dir("supervised"))
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 2 and "supervised: damaged: run.json lists it, but its folder" in out
    assert "1 setup(s) damaged" in err, err


@pytest.mark.parametrize("inside", ["checkpoints/supervised/seed-00", "checkpoints", "inspect"])
def test_out_inside_a_run_or_a_work_folder_is_refused(run, tmp_path, monkeypatch, capsys, inside):
    if inside == "inspect":  # a work folder of phase two (its record: work.json)
        (run / "inspect").mkdir(exist_ok=True)
        (run / "inspect" / "work.json").write_text("{}")
    refused(["run", "--out", run / inside / "x", *SMOKE], run, monkeypatch, capsys,
            "the inspect work folder" if inside == "inspect" else "is inside the run directory")


def test_the_start_line_shows_seed_ranges_and_the_device_syntax_is_checked_first(tmp_path, monkeypatch, capsys):
    from ssl_dynamics.train.cli import seed_words

    assert seed_words(tuple(range(100000))) == "seeds 0-99999" and seed_words((3,)) == "seed 3"
    assert seed_words((0, 1, 2, 5)) == "seeds 0-2,5"
    code, out, err = call(["run", "--out", tmp_path / "r", *SMOKE[:6], "--setup", "supervised",
                           "--seeds", "0-99999", "--epochs", "100000", "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "training" not in out and len(out) < 2000 and "not enough disk space" in err, (out, err)
    code, _, err = call(["run", "--out", tmp_path / "r", *SMOKE, "--device", "cuda:abc"], monkeypatch, capsys)
    assert code == 2 and "unknown device 'cuda:abc'" in err


def test_status_says_when_a_work_folder_does_not_exist(run, tmp_path, monkeypatch, capsys):
    code, out, _ = call(["status", run, "--work", tmp_path / "nowhere"], monkeypatch, capsys)
    assert code == 0 and f"--work {tmp_path / 'nowhere'}: no such folder" in out


def test_extend_past_the_cosine_period_says_the_learning_rate_rises_again(run, monkeypatch, capsys):
    from ssl_dynamics.train.schedules import learning_rate

    sc = art.load_run_config(run)[0].setups["supervised"]
    assert sc.cosine_period_epochs == 2 and learning_rate(sc, 3, 3) > learning_rate(sc, 2, 3) == 0.0
    code, out, err = call(["extend", run, "--setup", "supervised", "--to", "4", "--device", "cpu",
                           "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    assert "note: supervised's learning rate follows the reference cosine of period 2 epochs: it is 0 " \
        "at epoch 2 and rises again after it" in out, out


def test_a_rerun_without_preset_continues_with_the_runs_own_settings(run, monkeypatch, capsys):
    """`train run --out RUN` alone resumes RUN as it was made (preset smoke, its --set values,
    its setups and seeds); before, it meant the thesis preset and was refused."""
    before = snapshot(run)
    code, out, err = call(["run", "--out", run, "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    assert f"{run} continues with the settings it was made with (--preset smoke, supervised, seeds 0, " \
        "data synthetic)" in out
    assert "training supervised x seed 0 " in out and "done: 1/1 runs complete" in out, out
    assert snapshot(run) == before
    # more seeds or epochs on top of the recorded settings; a setup it lacks comes from its preset
    code, out, err = call(["run", "--out", run, "--seeds", "0-1", "--no-progress", "--deterministic"],
                          monkeypatch, capsys)
    assert code == 0 and "done: 2/2 runs complete" in out, out + err
    cfg, _ = art.load_run_config(run)
    assert cfg.seeds == (0, 1) and cfg.setups["supervised"].batch_size == 16 and cfg.train_subset == 48
    # an explicit other setting is still refused, with the values
    refused(["run", "--out", run, "--set", "supervised.lr=0.5", "--no-progress"], run, monkeypatch, capsys,
            "(lr: 0.09 in the run, 0.5 asked)")
    # an explicit --preset is taken as asked (and refused here: the thesis's settings differ)
    refused(["run", "--out", run, "--preset", "thesis", "--no-progress", "--no-download"], run, monkeypatch,
            capsys, "(the run was made with --preset smoke)")


def test_a_rerun_without_preset_restores_a_deleted_setup_json_and_refuses_a_lost_folder(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    original = paths.setup_json("supervised").read_bytes()
    paths.setup_json("supervised").unlink()
    code, out, err = call(["run", "--out", run, "--no-progress"], monkeypatch, capsys)
    assert code == 0 and "(--preset smoke, supervised, seeds 0, data synthetic)" in out, out + err
    assert json.loads(paths.setup_json("supervised").read_bytes()) == json.loads(original)  # from the headers
    # a folder gone whole: its settings are nowhere; refused unless --setup leaves it out
    import shutil

    shutil.rmtree(paths.setup_dir("supervised"))
    refused(["run", "--out", run, "--no-progress"], run, monkeypatch, capsys,
            "lists supervised, whose folder is gone, so its settings are recorded nowhere")
    code, out, err = call(["run", "--out", run, "--setup", "simclr", "--epochs", "1", "--no-progress"],
                          monkeypatch, capsys)
    assert code == 0 and "note: simclr is new to" in out and "done: 1/1 runs complete" in out, out + err


def test_a_rerun_without_preset_says_what_it_starts_and_points_longer_runs_to_extend(run, monkeypatch, capsys):
    code, out, err = call(["run", "--out", run, "--setup", "supervised", "--seeds", "1", "--no-progress",
                           "--epochs", "1"], monkeypatch, capsys)
    assert code == 2 and "`train extend" not in err  # 1 < 2 epochs: not a longer run
    refused(["run", "--out", run, "--epochs", "3", "--no-progress"], run, monkeypatch, capsys,
            f"(epochs: 2 in the run, 3 asked); `train extend {run} --setup supervised --to 3` trains its "
            f"seeds further")
    # seed 1 of simclr, asked once, makes seed 1 part of the run: a plain rerun says it will start it
    code, out, err = call(["run", "--out", run, "--setup", "simclr", "--seeds", "1", "--epochs", "1",
                           "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    code, out, err = call(["run", "--out", run, "--no-progress"], monkeypatch, capsys)
    assert "2 of its 4 runs are not started yet (e.g. simclr seed 0), and --setup / --seeds choose which to train" in out, out


def _rewrite_header(path: Path, edit) -> None:
    """Apply `edit` to a checkpoint's parsed header, keeping the header's length (padded)."""
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(data[:8] + text.ljust(n) + data[8 + n:])


def test_train_submit_does_not_call_a_damaged_seed_complete(run, monkeypatch, capsys):
    ckpt = art.RunPaths(run).checkpoint("supervised", 0, 1)
    ckpt.write_bytes(ckpt.read_bytes()[:-64])
    code, out, err = call(["submit", "--out", run, "--executor", "local", "--gpus-per-job", "0",
                           "--no-download"], monkeypatch, capsys)
    assert code == 2 and "nothing to submit: every selected run is trained" in out, out + err
    assert "1 run(s) damaged: supervised seed 0: 1 committed checkpoint(s) missing or truncated" in err, err


def test_a_header_with_malformed_offsets_is_damage_not_a_traceback(run, monkeypatch, capsys):
    ckpt = art.RunPaths(run).checkpoint("supervised", 0, 2)
    name = next(k for k in json.loads(ckpt.read_bytes()[8:8 + int.from_bytes(ckpt.read_bytes()[:8], "little")])
                if k != "__metadata__")
    _rewrite_header(ckpt, lambda h: h[name].update(data_offsets=None))
    code, out, _ = call(["status", run], monkeypatch, capsys)
    assert code == 2 and "1 committed checkpoint(s) missing or truncated (epoch 2)" in out, out
    # only the final status of a command reads headers; planning stats the files alone
    st = art.grid_status(run)[0]
    assert st.condition == "complete" and art.grid_status(run, sizes=True)[0].lost == (2,)


def test_an_epoch_redone_after_a_kill_between_its_writes_has_one_metrics_line(tmp_path, monkeypatch):
    """commit_epoch writes the checkpoint, the metrics line, resume.pt, then the manifest. A
    kill after the metrics line leaves it for an epoch the rerun trains again: the rerun
    must keep one line per epoch, not two."""
    from ssl_dynamics.train import loop

    real = loop.art.save_resume
    calls = []

    def killed_at_epoch_2(path, state):
        calls.append(state["epoch"])
        if state["epoch"] == 2 and len(calls) == 3:  # epochs 0, 1, then 2 the first time
            raise KeyboardInterrupt
        return real(path, state)

    monkeypatch.setattr(loop.art, "save_resume", killed_at_epoch_2)
    root = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_grid(root, tiny(), ["supervised"], CPU, progress=False, echo=quiet)
    paths = art.RunPaths(root)
    lines = [json.loads(x) for x in paths.metrics("supervised", 0).read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]  # epoch 2's line written, the epoch not committed
    train_grid(root, tiny(), ["supervised"], CPU, progress=False, echo=quiet)
    lines = [json.loads(x) for x in paths.metrics("supervised", 0).read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]


def test_a_checkpoint_that_cannot_be_read_is_named_not_called_damaged(run, monkeypatch, capsys):
    """Permissions or I/O are not damage to repair by deleting the seed: the error itself,
    in one line. (Root reads any file, so the refusal is simulated.)"""
    import pathlib

    target = art.RunPaths(run).checkpoint("supervised", 0, 1)
    real = pathlib.Path.stat

    def stat(self, *a, **k):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    code, out, err = call(["status", run], monkeypatch, capsys)
    assert code == 2 and err == f"error: Permission denied: {target}\n", err

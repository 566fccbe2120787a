"""Hostile input: every case of the bad-input catalogue ends in one line, exit status 2 and
an unchanged run directory; damaged files are refused before they count; a full disk, a
read-only archive, a moved dataset and a grown run are handled."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _util import main_result, private_copy, quiet, rt
from ssl_dynamics import artifacts as art
from ssl_dynamics.config import override, preset
from ssl_dynamics.inspect import cli as inspect_cli
from ssl_dynamics.inspect.rtdata import load_rt
from ssl_dynamics.train import cli as train_cli
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions

SETUPS = ["supervised", "random_labels"]
SMOKE = ["--preset", "smoke", "--set", "train_subset=32", "--set", "batch_size=16", "--epochs", "2",
         "--seeds", "0", "--no-progress", *[a for s in SETUPS for a in ("--setup", s)]]
BANK = dict(n_probe=16, n_replays=2, simclr_batch=8)


def smoke_cfg():
    cfg = override(preset("smoke"), ["epochs=2", "batch_size=16", "train_subset=32"])
    return replace(cfg, seeds=(0,))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A finished tiny run with its bank and r_t store."""
    root = tmp_path_factory.mktemp("hard") / "run"
    train_grid(root, smoke_cfg(), SETUPS, TrainOptions(device="cpu", deterministic=True),
               progress=False, echo=quiet)
    rt(root, **BANK)
    return root


@pytest.fixture
def run(archive, tmp_path):
    return private_copy(archive, tmp_path)


def call(main, args, monkeypatch, capsys) -> tuple[int, str]:
    """A command line as a user runs it, in this process: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["prog", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def expect_refusal(main, args, root, monkeypatch, capsys, message):
    before = snapshot(root)
    code, err = call(main, args, monkeypatch, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert snapshot(root) == before


# --------------------------------------------------------------------------- the catalogue

@pytest.mark.parametrize("assignment, message", [
    ("backbone=foo", "unknown backbone 'foo'"),
    ("momentum=-1", "momentum must be >= 0.0"),
    ("weight_decay=-1", "weight_decay must be >= 0.0"),
    ("label_seed=-1", "label_seed must be >= 0"),
    ("head_dim=0", "head_dim must be >= 1"),
    ("cosine_period_epochs=0", "cosine_period_epochs must be >= 1"),
    ("train_subset=-5", "train_subset must be >= 0"),
    ("lr=nan", "override 'lr=nan' (every setup): lr must be a finite number"),
    ("optimizer=foo", "override 'optimizer=foo' (every setup): optimizer must be one of adam, sgd"),
    ("supervised.lr=0", "setup supervised: lr must be > 0.0"),
])
def test_bad_settings(run, monkeypatch, capsys, assignment, message):
    expect_refusal(train_cli.main, ["run", "--out", run, *SMOKE, "--set", assignment], run,
                   monkeypatch, capsys, message)


def test_train_subset_larger_than_the_dataset(tmp_path, monkeypatch, capsys):
    # the smoke preset's dataset is the generated one: 256 training images
    args = ["run", "--out", tmp_path / "new", *SMOKE]
    expect_refusal(train_cli.main, [*args, "--set", "train_subset=5000"], tmp_path, monkeypatch,
                   capsys, "train_subset 5000 is larger than the dataset's 256 training images")
    # nor as new settings of a run in which nothing was trained yet (which they would replace)
    prepared = tmp_path / "prepared"
    from ssl_dynamics.train.grid import check_grid
    from ssl_dynamics.train.prepare import prepare_run

    cfg = smoke_cfg()
    dataset, _ = check_grid(prepared, cfg, SETUPS, TrainOptions(device="cpu"), True, False, quiet)
    prepare_run(prepared, cfg, SETUPS, dataset, quiet)
    expect_refusal(train_cli.main, ["run", "--out", prepared, *SMOKE, "--set", "train_subset=5000"], prepared,
                   monkeypatch, capsys, "train_subset 5000 is larger")


def test_a_run_of_other_settings_is_refused_before_its_dataset_is_loaded(run, tmp_path, monkeypatch, capsys):
    # the thesis preset (CIFAR-10) on a smoke run: the config differs, which needs no data;
    # before, it looked for (or downloaded) CIFAR-10 first and said that it was missing
    expect_refusal(train_cli.main, ["run", "--out", run, "--preset", "thesis", "--no-download", "--data-root",
                                    tmp_path / "none", "--no-progress"], run, monkeypatch, capsys,
                   "was made with a different config (dataset: synthetic in the run, cifar10 asked; train_subset: "
                   "32 in the run, 0 asked; width: 4 in the run, 64 asked) (the run was made with --preset smoke); "
                   "use another --out, or the run's own settings (without --preset and --set, `train run --out` "
                   "continues a run with the settings it records)")


def test_extend_with_no_setup_named_is_refused(run, monkeypatch, capsys):
    expect_refusal(train_cli.main, ["extend", run, "--setup", ",", "--to", "3", "--no-progress"], run,
                   monkeypatch, capsys, "--setup names no setup")


@pytest.mark.parametrize("value", [",", "", " , "])
def test_inspect_with_no_setup_named_is_refused(run, monkeypatch, capsys, value):
    # before, an empty --setup value meant "every setup" (Run.select(None)) and the command ran
    for args in (["dynamics", run], ["binomial", run], ["heterogeneity", run], ["classes", run],
                 ["examples", run], ["probe", run], ["embed", run], ["activations", run], ["rt", run],
                 ["all", run], ["submit", "rt", run, "--executor", "local"]):
        expect_refusal(inspect_cli.main, [*args, "--setup", value], run, monkeypatch, capsys,
                       "--setup names no setup")
    # one empty value among real ones is just a stray comma
    from ssl_dynamics.cli_util import split_names
    assert split_names(("supervised,", ",random_labels")) == ["supervised", "random_labels"]
    assert split_names(()) is None and split_names(None) is None


def test_out_is_a_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    expect_refusal(train_cli.main, ["run", "--out", target, *SMOKE], tmp_path, monkeypatch, capsys,
                   "is a file")


@pytest.mark.parametrize("content", ["{}", "[]"])
def test_damaged_run_json(run, monkeypatch, capsys, content):
    (run / "run.json").write_text(content)
    expect_refusal(train_cli.main, ["run", "--out", run, *SMOKE], run, monkeypatch, capsys,
                   "corrupt")
    expect_refusal(inspect_cli.main, ["dynamics", run], run, monkeypatch, capsys, "corrupt")
    expect_refusal(train_cli.main, ["status", run], run, monkeypatch, capsys, "corrupt")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(schema_version=99), "written under schema 99, by a newer version"),
    (lambda m: m.update(schema_version="x"), "schema_version 'x' is not a positive integer"),
    (lambda m: m["dataset"].update(n_train=-5), "dataset n_train -5 is not a positive integer"),
    (lambda m: m["dataset"].update(sha256="abc"), "dataset sha256 'abc' is not a sha256"),
    (lambda m: m.update(classes=[1, 2]), "classes is not a list of names"),
])
def test_bad_run_json_values(run, monkeypatch, capsys, edit, message):
    meta = json.loads((run / "run.json").read_text())
    edit(meta)
    (run / "run.json").write_text(json.dumps(meta))
    expect_refusal(inspect_cli.main, ["dynamics", run], run, monkeypatch, capsys, message)
    expect_refusal(train_cli.main, ["status", run], run, monkeypatch, capsys, message)
    expect_refusal(train_cli.main, ["run", "--out", run, *SMOKE], run, monkeypatch, capsys, message)


def test_garbage_label_permutation(run, monkeypatch, capsys):
    (run / "random_labels.npy").write_bytes(b"\x93NUMPY garbage")
    expect_refusal(train_cli.main, ["run", "--out", run, *SMOKE], run, monkeypatch, capsys,
                   "random_labels.npy")
    shutil.rmtree(run / "inspect")
    expect_refusal(inspect_cli.main, ["rt", run, "--no-progress"], run, monkeypatch, capsys,
                   "corrupt label permutation")


@pytest.mark.parametrize("option, value, message", [
    ("--replays", "0", "error: --replays (the bank's n_replays) must be an integer >= 1"),
    ("--replays", "-1", "error: --replays (the bank's n_replays) must be an integer >= 1"),
    ("--simclr-batch", "0", "error: --simclr-batch (the bank's simclr_batch) must be an integer >= 1"),
    ("--probes", "0", "error: --probes (the bank's n_probe) must be an integer >= 1"),
    ("--bank-seed", "-1", "'--bank-seed': -1 is not in the range 0<=x<="),
])  # "error: " + the message: the option is named once, as typed
def test_bad_bank_values(run, monkeypatch, capsys, option, value, message):
    for fresh in (False, True):  # refused whether a bank exists or would be built
        if fresh:
            shutil.rmtree(run / "inspect")
        expect_refusal(inspect_cli.main, ["rt", run, option, value, "--no-progress"], run,
                       monkeypatch, capsys, message)


def test_truncated_store_chunk(run, monkeypatch, capsys):
    chunk = next(p for p in sorted((run / "inspect" / "rt.zarr" / "supervised" / "correct").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:5])
    expect_refusal(inspect_cli.main, ["dynamics", run], run, monkeypatch, capsys, "corrupt r_t store")


def test_bad_analysis_options(run, monkeypatch, capsys):
    expect_refusal(inspect_cli.main, ["activations", run, "--channels", "0"], run, monkeypatch,
                   capsys, "'--channels': 0 is not in the range x>=1")
    expect_refusal(inspect_cli.main, ["dynamics", run, "--reference", "foo"], run, monkeypatch,
                   capsys, "reference setup 'foo' is not in the data")
    # refused before any work (t-SNE takes minutes on CIFAR), with the option's name
    for args, message in [(["embed", "--shrinkage", "2"], "'--shrinkage': 2.0 is not in the range 0.0<=x<=1.0"),
                          (["all", "--shrinkage", "-0.1"], "'--shrinkage': -0.1 is not in the range"),
                          (["embed", "--tsne-seed", "-1"], "'--tsne-seed': -1 is not in the range 0<=x<="),
                          (["embed", "--tsne-seed", str(2**32)], "'--tsne-seed': 4294967296 is not in the range"),
                          (["probe", "--seed", str(2**64)], f"'--seed': {2**64} is not in the range"),
                          (["binomial", "--seed", "-2"], "'--seed': -2 is not in the range"),
                          (["activations", "--channel-seed", "-1"], "'--channel-seed': -1 is not in the range")]:
        expect_refusal(inspect_cli.main, [args[0], run, *args[1:]], run, monkeypatch, capsys, message)
    expect_refusal(inspect_cli.main, ["submit", "rt", run, "--executor", "local", "--bank-seed", str(2**64)],
                   run, monkeypatch, capsys, f"'--bank-seed': {2**64} is not in the range")
    # mistakes a first-time user makes: refused at once, in one line, before any work
    for args, message in [(["all", "--steps", "-5"], "'--steps': -5 is not in the range 0<=x<=1000000"),
                          (["activations", "--steps", str(2**64)], f"'--steps': {2**64} is not in the range"),
                          (["rt", "--epochs", ","], "--epochs ',': give at least one integer"),
                          (["dynamics", "--epochs", ""], "--epochs '': give at least one integer"),
                          (["binomial", "--p0", ""], "--p0 '': give at least one number in (0, 1]"),
                          (["dynamics", "--store", ""], "'--store': an empty path"),
                          (["dynamics", "--work", " "], "'--work': an empty path"),
                          (["export", "--to", "netcdf", "--out", ""], "'--out': an empty path"),
                          (["rt", "--bank", ""], "'--bank': an empty path"),
                          (["all", "--p0", ","], "--p0 ',': give at least one number in (0, 1]"),
                          (["dynamics", "--epochs", "1,,5"], "--epochs '1,,5' has an empty item"),
                          (["examples", "--ref-epochs", "1,5,"], "--ref-epochs '1,5,' has an empty item"),
                          (["binomial", "--p0", "0.5,,0.75"], "--p0 '0.5,,0.75' has an empty item"),
                          (["examples", "--start-epoch", "99"], "--start-epoch 99 is past the last evaluated epoch"),
                          (["dynamics", "--setup", "foo"], "setup 'foo' is not in this run (it has supervised, "
                                                           "random_labels)")]:
        expect_refusal(inspect_cli.main, [args[0], run, *args[1:]], run, monkeypatch, capsys, message)
    expect_refusal(train_cli.main, ["extend", run, "--setup", "foo"], run, monkeypatch, capsys,
                   "unknown setup 'foo'")


def test_inspect_folder_is_a_file(run, monkeypatch, capsys):
    shutil.rmtree(run / "inspect")
    (run / "inspect").write_text("not a folder")
    expect_refusal(inspect_cli.main, ["dynamics", run], run, monkeypatch, capsys, "is a file")


def rewrite_checkpoint(run: Path, setup: str, epoch: int, edit) -> Path:
    """Change one checkpoint with `edit(state, metadata)` and record it in the manifest (so the
    sha256 check passes and the deeper checks are what must refuse it)."""
    path = art.RunPaths(run).checkpoint(setup, 0, epoch)
    state, _ = art.load_checkpoint(path)
    data = art.safetensors_bytes(*edit(dict(state), json.loads(json.dumps(_raw_meta(path)))))
    art.write_bytes_atomic(path, data)
    manifest = art.RunPaths(run).manifest(setup, 0)
    m = art.read_json(manifest)
    m["checkpoints"][str(epoch)] = art.sha256_bytes(data)
    art.write_json_atomic(manifest, m)
    return path


def _raw_meta(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


@pytest.mark.parametrize("edit, message", [
    (lambda st, md: (st, {**md, "meta": "{not json"}), "its metadata is not JSON"),
    (lambda st, md: ({k: v for k, v in st.items() if k != "head.bias"}, md), "lacks head.bias"),
])
def test_damaged_checkpoint(run, monkeypatch, capsys, edit, message):
    shutil.rmtree(run / "inspect" / "rt.zarr")
    rewrite_checkpoint(run, "supervised", 1, edit)
    for extra in ([], ["--no-verify"]):
        expect_refusal(inspect_cli.main, ["rt", run, "--no-progress", *extra], run, monkeypatch,
                       capsys, message)


def test_non_finite_weights_are_refused_not_stored(run, monkeypatch, capsys):
    shutil.rmtree(run / "inspect" / "rt.zarr")

    def poison(state, md):
        state["head.weight"] = state["head.weight"].clone()
        state["head.weight"][0, 0] = float("nan")
        return state, md

    rewrite_checkpoint(run, "supervised", 2, poison)
    code, err = call(inspect_cli.main, ["rt", run, "--no-progress", "--setup", "supervised"],
                     monkeypatch, capsys)
    assert code == 2 and "non-finite weights (NaN/inf) in head.weight" in err
    d = load_rt(run / "inspect" / "rt.zarr")["supervised"]
    assert not d.valid[0, 2] and d.valid[0, 1]  # stored as not done, the others kept


# --------------------------------------------------------------------------- files on disk

def subprocess_cli(module: str, args, limit_bytes: int | None = None, timeout: float = 300):
    """Run a CLI in a fresh process, optionally with a file-size limit (a disk that fills up:
    writes past the limit fail with EFBIG, as they would with ENOSPC)."""
    import resource
    import signal
    import subprocess

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-c", f"from ssl_dynamics.{module}.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if limit_bytes else None)


def test_disk_full_while_training_and_evaluating_resumes_cleanly(archive, tmp_path):
    # a checkpoint of this tiny network is ~200 kB: a 50 kB limit fails the first one
    args = ["run", "--out", tmp_path / "run", *SMOKE, "--deterministic", "--ignore-disk-check"]
    r = subprocess_cli("train", args, limit_bytes=50_000)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no space left on the device" in r.stderr and "rerun" in r.stderr
    assert not list((tmp_path / "run").rglob(".*.tmp"))  # no half-written file left
    assert subprocess_cli("train", args).returncode == 0  # space is back: it completes
    for setup in SETUPS:  # ... with the checkpoints of an uninterrupted run
        m = lambda root: art.read_json(art.RunPaths(root).manifest(setup, 0))["checkpoints"]  # noqa: E731
        assert m(tmp_path / "run") == m(archive)
    bank = ["--probes", "16", "--replays", "2", "--simclr-batch", "8"]
    r = subprocess_cli("inspect", ["rt", tmp_path / "run", "--no-progress", *bank], limit_bytes=20_000)
    assert r.returncode == 2 and "no space left on the device" in r.stderr and r.stderr.count("\n") == 1
    assert subprocess_cli("inspect", ["rt", tmp_path / "run", "--no-progress", *bank]).returncode == 0
    a, b = load_rt(archive / "inspect" / "rt.zarr"), load_rt(tmp_path / "run" / "inspect" / "rt.zarr")
    for s in SETUPS:
        assert np.array_equal(a[s].correct, b[s].correct) and np.array_equal(a[s].p_true, b[s].p_true)


def test_space_check_before_building_bank_and_store(run, monkeypatch, capsys):
    from collections import namedtuple

    shutil.rmtree(run / "inspect")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1, 1, 1000))
    expect_refusal(inspect_cli.main, ["rt", run, "--no-progress"], run, monkeypatch, capsys,
                   "not enough disk space")


def test_orphaned_bank_temp_files_are_removed(run):
    orphan = run / "inspect" / ".bank.h5.x1y2.tmp"
    (run / "inspect" / "bank.h5").unlink()
    orphan.write_bytes(b"half a bank")
    shutil.rmtree(run / "inspect" / "rt.zarr")
    rt(run, **BANK)
    assert not orphan.exists() and (run / "inspect" / "bank.h5").exists()


def test_diverged_first_epoch_leaves_a_run_that_takes_the_corrected_command(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err = call(train_cli.main, ["run", "--out", out, *SMOKE, "--set", "supervised.lr=1e30"],
                     monkeypatch, capsys)
    assert code == 2 and "loss became" in err
    code, err = call(train_cli.main, ["run", "--out", out, *SMOKE], monkeypatch, capsys)
    assert code == 0, err
    assert all(s.state == "complete" for s in art.grid_status(out))


def test_unreadable_resume_state_says_what_to_do(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    m = art.read_json(paths.manifest("supervised", 0))
    m["complete"] = False  # make it resume
    art.write_json_atomic(paths.manifest("supervised", 0), m)
    paths.resume("supervised", 0).write_bytes(b"not a resume state")
    code, err = call(train_cli.main, ["run", "--out", run, *SMOKE], monkeypatch, capsys)
    assert code == 2 and "optimizer state is lost" in err and "delete" in err
    shutil.rmtree(paths.seed_dir("supervised", 0))  # what the message says to do
    assert call(train_cli.main, ["run", "--out", run, *SMOKE], monkeypatch, capsys)[0] == 0
    assert art.grid_status(run)[0].state == "complete"


# --------------------------------------------------------------------------- archives

def read_only_mount_works() -> bool:
    import subprocess

    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / /mnt 2>/dev/null && "
                            "mount -o remount,bind,ro /mnt && ! touch /mnt/tmp/.ro-probe"],
                           capture_output=True)
    return probe.returncode == 0


def run_read_only(folder: Path, args: list, cwd: Path):
    """A command with `folder` mounted read-only (a private mount namespace), as on an archive."""
    import shlex
    import subprocess

    cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-c",
                                                  "from ssl_dynamics.inspect.cli import main; main()", *args])
    script = f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))} && " \
             f"mount -o remount,bind,ro {shlex.quote(str(folder))} && {cmd}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux mount namespaces")
def test_read_only_archive_is_analysed_without_writing_to_it(run, tmp_path):
    if not read_only_mount_works():
        pytest.skip("no private read-only mounts here (needs unshare with CAP_SYS_ADMIN)")
    (run / "inspect" / "rt.zarr.lock").unlink(missing_ok=True)  # reading must not need it
    before = snapshot(run)
    # 1) the archive's finished store is read where it is: no lock, no write
    r = run_read_only(run, ["dynamics", run, "--epochs", "1,2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "is read-only: phase-two outputs go to" in r.stdout
    assert (tmp_path / "run-inspect" / "figures" / "fig4_1_sorted_rt.png").exists()
    # 2) evaluation into a work folder, reusing the archive's bank
    r = run_read_only(run, ["rt", run, "--work", tmp_path / "work", "--no-progress"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_rt(run / "inspect" / "rt.zarr"), load_rt(tmp_path / "work" / "rt.zarr")
    assert all(np.array_equal(a[s].correct, b[s].correct) for s in SETUPS)
    assert snapshot(run) == before and not (run / "inspect" / "rt.zarr.lock").exists()


def make_imagefolder(root: Path, n_per_class: int = 4, classes: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_per_class), ("test", 2)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                px = (rng.random((32, 32, 3)) * 40 + c * 20).astype(np.uint8)
                Image.fromarray(px).save(root / split / f"c{c}" / f"{i:03d}.png")


def test_moved_dataset_is_found_by_its_checksum(tmp_path, monkeypatch, capsys):
    make_imagefolder(tmp_path / "images")
    out = tmp_path / "run"
    args = ["run", "--out", out, "--preset", "smoke", "--dataset", f"imagefolder:{tmp_path / 'images'}",
            "--setup", "supervised", "--seeds", "0", "--epochs", "1", "--set", "batch_size=8", "--no-progress"]
    assert call(train_cli.main, args, monkeypatch, capsys)[0] == 0
    (tmp_path / "images").rename(tmp_path / "moved")
    code, err = call(inspect_cli.main, ["rt", out, "--no-progress"], monkeypatch, capsys)
    assert code == 2 and ("not found" in err or "image folder" in err)
    # phase one follows the data too: the run is taken up (and extended) from the new place
    moved = ["--dataset", f"imagefolder:{tmp_path / 'moved'}"]
    assert call(train_cli.main, [*args, *moved], monkeypatch, capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["config"]["dataset"] == moved[1]
    code, err = call(train_cli.main, ["extend", out, "--setup", "supervised", "--to", "3", "--device", "cpu",
                                      "--no-progress", *moved], monkeypatch, capsys)
    assert code == 0, err
    assert art.read_json(art.RunPaths(out).manifest("supervised", 0))["extended_to"] == 3
    code, err = call(inspect_cli.main, ["rt", out, "--no-progress", "--dataset",
                                        f"imagefolder:{tmp_path / 'moved'}"], monkeypatch, capsys)
    assert code == 0, err
    # other data under the same name is refused by its checksum
    shutil.rmtree(out / "inspect")
    first = sorted((tmp_path / "moved" / "train" / "c0").iterdir())[0]
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(first)
    code, err = call(inspect_cli.main, ["rt", out, "--no-progress", "--dataset",
                                        f"imagefolder:{tmp_path / 'moved'}"], monkeypatch, capsys)
    assert code == 2 and "sha256 mismatch" in err
    # and so is it in phase one, with advice that fits `train extend` (which has no --out)
    code, err = call(train_cli.main, ["extend", out, "--setup", "supervised", "--to", "4", "--device", "cpu",
                                      "--no-progress", *moved], monkeypatch, capsys)
    assert code == 2 and "was made from other data (dataset contents: sha256 " in err and \
        "give the data it was made with (--data-root / --dataset)" in err, err
    code, err = call(train_cli.main, ["extend", out, "--setup", "supervised", "--to", "4", "--device", "cpu",
                                      "--no-progress", "--dataset", "synthetic"], monkeypatch, capsys)
    assert code == 2 and "was made from other data (dataset: imagefolder:" in err, err


def test_a_refused_dataset_is_the_only_line_train_run_prints(tmp_path, monkeypatch, capsys):
    """`training ...` is announced only once the checks passed, with --device and with --devices."""
    for how in (["--device", "cpu"], ["--devices", "cpu,cpu"]):
        code, out, err = main_result(train_cli.main, [
            "run", "--out", tmp_path / "run", "--preset", "smoke", "--dataset", f"imagefolder:{tmp_path / 'none'}",
            "--no-progress", *how], monkeypatch, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and "none" in err, (out, err)
    make_imagefolder(tmp_path / "images")
    code, out, err = main_result(train_cli.main, [
        "run", "--out", tmp_path / "run", "--preset", "smoke", "--dataset", f"imagefolder:{tmp_path / 'images'}",
        "--setup", "supervised", "--seeds", "0", "--epochs", "1", "--set", "batch_size=8", "--no-progress",
        "--device", "cpu"], monkeypatch, capsys)
    assert code == 0 and "\ntraining supervised x seed 0 on cpu (fp32) into " in out, (out, err)
    code, out, err = main_result(train_cli.main, [
        "extend", tmp_path / "run", "--setup", "supervised", "--to", "2", "--device", "cpu", "--no-progress",
        "--dataset", f"imagefolder:{tmp_path / 'none'}"], monkeypatch, capsys)
    assert code == 2 and "extending" not in out and err.count("\n") == 1, (out, err)


def test_an_image_folder_run_records_where_its_data_and_each_probe_image_are(tmp_path, monkeypatch, capsys):
    import h5py
    import pandas as pd
    from PIL import Image

    from ssl_dynamics.data import load_imagefolder

    make_imagefolder(tmp_path / "images")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)  # a relative path is recorded as the absolute one
    out = tmp_path / "run"
    args = ["run", "--out", out, "--preset", "smoke", "--dataset", "imagefolder:images", "--setup", "supervised",
            "--seeds", "0", "--epochs", "1", "--set", "batch_size=8", "--set", "train_subset=20", "--no-progress"]
    assert call(train_cli.main, args, monkeypatch, capsys)[0] == 0
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["dataset"] == f"imagefolder:{tmp_path / 'images'}" and config["data_root"] == str(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "elsewhere")  # phase two from another folder finds the data
    for cmd in (["rt", out, "--probes", "8", "--replays", "2"], ["examples", out]):
        code, err = call(inspect_cli.main, [*cmd, "--no-progress"], monkeypatch, capsys)
        assert code == 0, err
    df = pd.read_parquet(out / "inspect" / "tables" / "examples.parquet")
    whole = load_imagefolder(tmp_path / "images")
    with h5py.File(out / "inspect" / "bank.h5", "r") as f:
        probes = f["images"][:]
    assert len(df) == 8 and (df.source_index != df.dataset_index).any()  # a subset: they differ
    for row in df.itertuples():  # each row names the file that holds its image, and its class
        assert whole.train_files[row.source_index] == row.source_file
        assert row.source_file.split("/")[1] == row.class_name
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / row.source_file)),
                              probes[row.probe].transpose(1, 2, 0))
    # an unreadable image is named as such, without blaming the data's location
    victim = tmp_path / "images" / df.source_file.iloc[0]
    kept = victim.read_bytes()
    victim.write_bytes(b"not an image")
    code, err = call(inspect_cli.main, ["rt", out, "--no-progress", "--bank", tmp_path / "b2.h5",
                                      "--store", tmp_path / "s2.zarr"],
                     monkeypatch, capsys)
    assert code == 2 and "cannot read image" in err and "run.json" not in err, err
    victim.write_bytes(kept)
    # `train extend` records a path given relative to another folder as the same absolute one
    code, err = call(train_cli.main, ["extend", out, "--setup", "supervised", "--to", "2", "--device", "cpu",
                                      "--no-progress", "--dataset", "imagefolder:../images"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["config"]["dataset"] == f"imagefolder:{tmp_path / 'images'}"
    # a run that recorded a relative path: the refusal says where the path came from
    meta = json.loads((out / "run.json").read_text())
    meta["config"]["dataset"] = "imagefolder:images"
    (out / "run.json").write_text(json.dumps(meta))
    shutil.rmtree(out / "inspect")
    code, err = call(inspect_cli.main, ["rt", out, "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "image folder images must contain" in err and \
        "where run.json says the data was when run was trained; point --dataset" in err, err


def test_added_seeds_grow_the_store_without_re_evaluating(run, monkeypatch, capsys):
    store = run / "inspect" / "rt.zarr"
    old = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "/c/" in str(p)}
    args = ["run", "--out", run, *[a if a != "0" else "0-1" for a in SMOKE], "--deterministic"]
    assert call(train_cli.main, args, monkeypatch, capsys)[0] == 0
    res = rt(run)
    assert res["evaluated"] == 2 * 3  # the new seed's epochs 0-2 of both setups, nothing else
    assert all(p.stat().st_mtime_ns == t for p, t in old.items())  # old chunks untouched
    d = load_rt(store)["supervised"]
    assert list(d.seeds) == [0, 1] and d.valid.all()


# --------------------------------------------------------------------------- pipeline

def test_inspect_all_skips_what_cannot_be_computed_and_still_reports(run, monkeypatch, capsys):
    # 32 training images: 3 per class, far fewer than the features' dimensions, so the class
    # covariances of Fig. 5.2 are singular; everything else still runs
    code, err = call(inspect_cli.main, ["all", run, "--steps", "2", "--no-progress"], monkeypatch, capsys)
    assert code == 3, err
    skipped = art.read_json(run / "inspect" / "skipped.json")
    assert [s["analysis"] for s in skipped] == ["kl"] and "singular" in skipped[0]["reason"]
    page = (run / "inspect" / "report" / "index.html").read_text()
    assert "could not be computed" in page and "kl" in page and "Fig. 5.1" in page
    for name in ("fig4_1_sorted_rt", "fig5_1_tsne", "fig5_4_activations", "fig_heterogeneity"):
        assert (run / "inspect" / "figures" / f"{name}.png").exists()


def test_inspect_all_evaluates_in_the_precision_asked_for(run, monkeypatch, capsys):
    # a store evaluated in bf16 is extended by `inspect all --precision bf16`; without the
    # option, `all` would try fp32 and the store would refuse it
    from ssl_dynamics.inspect import pipeline

    shutil.rmtree(run / "inspect")
    base = ["--no-progress", "--probes", "16", "--replays", "2"]
    assert call(inspect_cli.main, ["rt", run, "--precision", "bf16", "--epochs", "0", *base],
                monkeypatch, capsys)[0] == 0
    results = []
    monkeypatch.setattr(pipeline, "run_all", lambda ws, rt_step, *a, **k: results.append(rt_step()))
    assert call(inspect_cli.main, ["all", run, "--precision", "bf16", *base], monkeypatch, capsys)[0] == 0
    assert results[0]["evaluated"] == 2 * 2  # epochs 1-2 of both setups' one seed, in bf16
    code, err = call(inspect_cli.main, ["all", run, *base], monkeypatch, capsys)
    assert code == 2 and "evaluated in bf16" in err, err


def test_feature_cache_notices_a_replaced_checkpoint(run):
    from ssl_dynamics.inspect.features import FeatureCache
    from ssl_dynamics.inspect.workspace import open_workspace

    cache = FeatureCache(open_workspace(run, echo=quiet), echo=quiet)
    first, _ = cache.get("supervised", 0, 2)
    rewrite_checkpoint(run, "supervised", 2, lambda st, md: ({**st, "head.bias": st["head.bias"] + 1}, md))
    lines = []
    cache = FeatureCache(open_workspace(run, echo=quiet), echo=lines.append)
    again, _ = cache.get("supervised", 0, 2)
    assert any("changed since its features were cached" in line for line in lines)
    assert np.array_equal(first, again)  # the head is not part of the representation


def test_killed_evaluation_resumes_to_the_same_store(archive, tmp_path):
    """kill -9 `inspect rt` while it is writing the store (after its first checkpoint is
    committed, before its last); the rerun ends with the uninterrupted store."""
    import signal
    import subprocess
    import time

    local = tmp_path / "run"
    shutil.copytree(archive, local, ignore=shutil.ignore_patterns("rt.zarr*"))
    store = local / "inspect" / "rt.zarr"
    cmd = [sys.executable, "-c", "from ssl_dynamics.inspect.cli import main; main()", "rt", local,
           "--no-progress"]

    def committed() -> int:  # done flags written: each chunk file appears whole, by rename from
        # a temporary `<name>.<uuid>.partial` beside it, which is not counted (a kill right after
        # it appeared, before the rename, left no evaluated checkpoint: 3 such tries on a busy machine)
        return sum(1 for s in SETUPS for p in (store / s / "done" / "c").rglob("*") if p.is_file() and p.name.isdigit())

    for _ in range(3):  # the 6 checkpoints take ~0.3 s: a kill that came too late is retried
        shutil.rmtree(store, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while committed() == 0 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        evaluated = sum(int(d.valid.sum()) for d in load_rt(store).values()) if committed() else 0
        if proc.returncode == -signal.SIGKILL and 0 < evaluated < 6:
            break
    assert proc.returncode == -signal.SIGKILL  # killed, not finished before the signal
    assert 0 < evaluated < 6  # mid-run: some checkpoints in the store, not all
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    a, b = load_rt(archive / "inspect" / "rt.zarr"), load_rt(store)
    for s in SETUPS:
        assert np.array_equal(a[s].correct, b[s].correct) and np.array_equal(a[s].p_true, b[s].p_true)
        assert np.array_equal(a[s].valid, b[s].valid)


def test_interrupt_says_how_to_resume(monkeypatch, capsys):
    import click

    from ssl_dynamics.cli_util import run_cli

    @click.group()
    def group():
        pass

    @group.command()
    def boom():
        raise KeyboardInterrupt

    code, err = call(lambda: run_cli(group, "rerun the same command to resume"), ["boom"],
                     monkeypatch, capsys)
    assert code == 130 and err.strip() == "interrupted: rerun the same command to resume"


def test_nothing_to_do_draws_no_bar_and_an_unwritable_folder_says_why(tmp_path):
    from ssl_dynamics.errors import UserError
    from ssl_dynamics.progress import bar

    assert bar(0, "checkpoints").disable and not bar(3, "checkpoints").disable
    with pytest.raises(UserError, match=r"cannot create files in /proc \("):
        art.check_writable(Path("/proc"))


def test_broken_and_looping_symbolic_links_as_outputs_are_one_line(run, tmp_path, monkeypatch, capsys):
    # mkdir on such a link says only "File exists", and Path.resolve() raises on a loop
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "loop.zarr").symlink_to("loop.zarr")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    train = ["run", *SMOKE]
    for out in ("loop", "dangling", "dangling/sub"):
        expect_refusal(train_cli.main, [*train, "--out", tmp_path / out], run, monkeypatch, capsys,
                       f"is a broken symbolic link (to {tmp_path / 'nowhere' if 'dangling' in out else 'loop'})")
    (tmp_path / "gone.zarr").symlink_to(tmp_path / "nowhere.zarr")
    (tmp_path / "gone.h5").symlink_to(tmp_path / "nowhere.h5")
    for args, message in ([["--work", tmp_path / "dangling"], "cannot create files in"],
                          [["--store", tmp_path / "loop.zarr"], "loop.zarr is a broken symbolic link (to loop.zarr)"],
                          [["--store", tmp_path / "gone.zarr"], "gone.zarr is a broken symbolic link (to "],
                          [["--bank", tmp_path / "gone.h5", "--store", tmp_path / "s.zarr"],
                           "gone.h5 is a broken symbolic link (to "]):
        expect_refusal(inspect_cli.main, ["rt", run, "--no-progress", *args], run, monkeypatch, capsys,
                       message)
    expect_refusal(inspect_cli.main, ["export", run, "--to", "parquet", "--out", tmp_path / "loop"], run,
                   monkeypatch, capsys, "loop is a broken symbolic link (to loop); choose another path")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != run.name) == \
        ["dangling", "gone.h5", "gone.zarr", "loop", "loop.zarr"]
    assert (tmp_path / "gone.h5").is_symlink()  # not replaced by a file


@pytest.mark.parametrize("prog, args", [("train", []), ("inspect", []), ("inspect", ["submit"])])
def test_a_command_alone_prints_its_help_as_help(prog, args, monkeypatch, capsys):
    """Typing `inspect` alone used to print the whole help squeezed into one error line."""
    main = train_cli.main if prog == "train" else inspect_cli.main
    monkeypatch.setattr(sys, "argv", [prog, *args])
    with pytest.raises(SystemExit):
        main()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.startswith("Usage: ") and "[OPTIONS] COMMAND" in text.splitlines()[0], text
    assert text.count("\n") > 8 and "error:" not in text and "Commands:" in text, text


def test_exit_statuses_in_help_are_those_of_the_docs():
    from click.testing import CliRunner

    for cli in (train_cli.cli, inspect_cli.cli):
        out = CliRunner().invoke(cli, ["--help"]).output
        text = " ".join(out.split())
        one = "1 workers or jobs failed" if cli is train_cli.cli else "1 jobs failed"
        for status in ("0 done", one, "2 bad input", "130 interrupted"):
            assert status in text, out


def test_each_analysis_help_says_what_it_reads_and_every_output_it_writes():
    from click.testing import CliRunner

    from ssl_dynamics.inspect.outputs import STEP_OUTPUTS

    said = {}
    for name in ("dynamics", "binomial", "heterogeneity", "classes", "examples", "probe", "embed", "activations"):
        said[name] = " ".join(CliRunner().invoke(inspect_cli.cli, [name, "--help"]).output.split())
        reads = "run `inspect rt` first" if name in ("dynamics", "binomial", "heterogeneity", "classes",
                                                       "examples") else "Reads the checkpoints themselves"
        assert reads in said[name], said[name]
    steps = {**{n: n for n in said}, "tsne": "embed", "kl": "embed"}
    for step, (names, group) in STEP_OUTPUTS.items():
        assert all(n in said[steps[step]] for n in names) and f"{group}" in said[steps[step]], step


def test_notes_for_settings_that_train_but_mislead(tmp_path, monkeypatch, capsys):
    """A 10-way head on a 3-class image folder, a width a timm backbone ignores, bf16 on the
    CPU: each trains, and each is said once before training."""
    from ssl_dynamics.errors import UserError
    from ssl_dynamics.train.grid import check_grid

    make_imagefolder(tmp_path / "images", classes=3)
    cfg = override(smoke_cfg(), [f"dataset=imagefolder:{tmp_path / 'images'}", "train_subset=0"])
    said = []
    check_grid(tmp_path / "a", cfg, ["supervised", "simclr"], TrainOptions(device="cpu", bf16=True), True,
               False, said.append)
    assert any(s.startswith("note: supervised classify into 10 outputs, the dataset has 3 classes; "
                            "--set head_dim=3") for s in said), said
    assert any("bf16 autocast on the CPU is emulated" in s for s in said), said
    said.clear()
    check_grid(tmp_path / "b", override(smoke_cfg(), ["backbone=timm:resnet18"]), ["supervised"],
               TrainOptions(device="cpu"), True, False, said.append)
    assert "note: width 4 applies to resnet18_cifar only; timm:resnet18 has its own widths" in said, said
    assert not any("head_dim" in s or "bf16" in s for s in said), said
    # more classes than outputs cannot train at all: refused, naming the fix
    make_imagefolder(tmp_path / "twelve", classes=12)
    many = override(smoke_cfg(), [f"dataset=imagefolder:{tmp_path / 'twelve'}", "train_subset=0"])
    with pytest.raises(UserError, match=r"^setup supervised: head_dim 10 is smaller than the dataset's 12 "
                                        r"classes; give --set head_dim=12$"):
        check_grid(tmp_path / "c", many, ["supervised"], TrainOptions(device="cpu"), True, False, said.append)


def test_extend_of_several_setups_extends_them_all_before_naming_a_damaged_seed(run, monkeypatch, capsys):
    paths = art.RunPaths(run)
    ckpt = paths.checkpoint("supervised", 0, 1)  # an earlier epoch: the extension itself can go on
    ckpt.write_bytes(ckpt.read_bytes()[:-64])
    code, err = call(train_cli.main, ["extend", run, "--setup", "supervised,random_labels", "--to", "3",
                                      "--device", "cpu", "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "1 run(s) damaged: supervised seed 0" in err, err
    for setup in SETUPS:
        assert art.read_json(paths.manifest(setup, 0))["extended_to"] == 3, setup


def test_a_symlink_loop_met_anywhere_else_is_one_line(monkeypatch, capsys):
    """Path.resolve() raises RuntimeError on a loop before Python 3.13: one line, exit 2."""
    import click

    from ssl_dynamics.cli_util import run_cli

    @click.group()
    def group():
        pass

    @group.command()
    def go():
        raise RuntimeError("Symlink loop from '/tmp/x'")

    monkeypatch.setattr(sys, "argv", ["prog", "go"])
    with pytest.raises(SystemExit) as e:
        run_cli(group, "")
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: Symlink loop from '/tmp/x': a symbolic link that leads back "
                                       "to itself; remove it or choose another path\n")

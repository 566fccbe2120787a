"""`inspect all` computes only what changed: a rerun skips every analysis that is up to date,
an option reruns the analyses that use it, a missing output its analysis, --redo the named
ones. Bad options stop it before anything is written; a failing report or a damaged
representation cache is a skipped step, not a traceback."""
import re

import pytest
from _util import private_copy
from click.testing import CliRunner

from ssl_dynamics.errors import UserError
from ssl_dynamics.inspect.cli import cli

STEP_NAMES = ("dynamics", "binomial", "heterogeneity", "classes", "examples", "probe", "tsne", "kl",
              "activations")
FAST = ["--device", "cpu", "--steps", "2", "--shrinkage", "0.5", "--no-progress"]


def run_all(run, *extra, code=(0, 3)):
    r = CliRunner().invoke(cli, ["all", str(run), *FAST, *map(str, extra)])
    assert r.exit_code in code, r.output + repr(r.exception)
    return r


def computed(output: str) -> set[str]:
    """The analyses (after rt) that this `inspect all` computed, not found up to date."""
    return set(re.findall(r"^== (\w+)$", output, re.M)) - {"rt", "report"}


def snapshot(root) -> dict[str, bytes]:
    """Every file under root (lock files aside: taking a lock writes nothing)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def up_to_date(output: str) -> set[str]:
    return set(re.findall(r"^== (\w+): up to date", output, re.M))


@pytest.fixture(scope="module")
def analysed(tiny_rt, tmp_path_factory):
    run = private_copy(tiny_rt, tmp_path_factory.mktemp("all"))
    first = run_all(run)
    assert computed(first.output) == set(STEP_NAMES)
    return run, first


def test_a_rerun_computes_only_what_changed(analysed, tmp_path):
    done, first = analysed
    run = private_copy(done, tmp_path)
    ok = set(STEP_NAMES) - set(re.findall(r"^skipped (\w+):", first.output, re.M))
    work = run / "inspect"
    before = {p: p.stat().st_mtime_ns for p in (work / "figures").iterdir()}
    again = run_all(run)
    assert computed(again.output) == set(STEP_NAMES) - ok and up_to_date(again.output) == ok
    assert {p: p.stat().st_mtime_ns for p in (work / "figures").iterdir()} == before
    assert "up to date (" in again.output.splitlines()[-1]  # the summary line

    out = run_all(run, "--p0", "0.3").output  # an option of binomial only
    assert computed(out) == {"binomial"} | (set(STEP_NAMES) - ok)
    (work / "figures" / "fig5_3_class_rt.png").unlink()  # a missing output
    out = run_all(run, "--p0", "0.3").output
    assert computed(out) == {"classes"} | (set(STEP_NAMES) - ok)
    out = run_all(run, "--p0", "0.3", "--redo", "dynamics,kl").output
    assert computed(out) == {"dynamics", "kl"} | (set(STEP_NAMES) - ok)
    out = run_all(run, "--p0", "0.3", "--setup", "supervised").output  # other setups: everything
    assert computed(out) == set(STEP_NAMES)


def test_a_failing_report_is_a_skipped_step(analysed, tmp_path, monkeypatch):
    from ssl_dynamics.inspect import report

    run = private_copy(analysed[0], tmp_path)

    def broken(*_a, **_kw):
        raise RuntimeError("no report today")

    monkeypatch.setattr(report, "build_report", broken)
    r = run_all(run, code=(3,))
    assert "skipped report: RuntimeError: no report today" in r.output
    last = r.output.strip().splitlines()[-1]
    assert "report" in last and "skipped.json" in last


def test_a_damaged_feature_cache_skips_its_analyses(analysed, tmp_path):
    run = private_copy(analysed[0], tmp_path)
    work = run / "inspect"
    (work / "features.zarr" / "zarr.json").write_text("")
    r = run_all(run, "--redo", "probe,activations", code=(3,))
    assert re.search(r"^skipped probe: damaged representation cache .*features.zarr", r.output, re.M)
    assert "activations" in computed(r.output) and "skipped activations" not in r.output
    # the probe table of the earlier run is not this run's: moved aside, not in the report
    assert not (work / "tables" / "tableB_1_probe.json").exists()
    assert (work / "stale" / "probe" / "tables" / "tableB_1_probe.json").exists()
    assert "Table B.1" not in (work / "report" / "index.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--p0", "1.5"], "p0 must be in (0, 1], got 1.5"),
    (["--ref-epochs", "99"], "--ref-epochs 99: the reference setup simclr has epochs 1-2"),
    (["--epoch", "99"], "has epochs 0-2, not 99"),
    (["--probes", "64"], "--probes 64"),
    (["--redo", "tsne,foo"], "--redo 'tsne,foo'"),
    (["--redo", "embed,foo"], "(embed: tsne,kl)")])
def test_bad_options_stop_all_before_any_write(tiny_rt, tmp_path, args, message):
    run = private_copy(tiny_rt, tmp_path)
    before = snapshot(run)
    r = CliRunner().invoke(cli, ["all", str(run), *FAST, *args])
    assert isinstance(r.exception, UserError) and message in str(r.exception), r.output + repr(r.exception)
    assert "== dynamics" not in r.output
    assert snapshot(run) == before


# ------------------------------------------------------------------ what a stamp must notice

def test_a_store_evaluated_anew_or_in_another_precision_has_another_state(tiny_run, tmp_path):
    """Deleting the store and evaluating again (in bf16, or with a fixed evaluator) gives the
    same checkpoints and done flags but other values: the state must change."""
    import shutil

    from _util import private_copy, rt
    from ssl_dynamics.inspect.rtdata import store_state
    from conftest import TINY_BANK

    run = private_copy(tiny_run, tmp_path)
    store = run / "inspect" / "rt.zarr"
    rt(run, setups=["supervised"], **TINY_BANK)
    first = store_state(store)
    assert store_state(store) == first  # stable while nothing changes
    rt(run, setups=["supervised"], **TINY_BANK)  # nothing to evaluate: the same store
    assert store_state(store) == first
    shutil.rmtree(store)
    rt(run, setups=["supervised"], bf16=True, **TINY_BANK)
    assert store_state(store) != first


def test_library_versions_are_part_of_every_stamp(monkeypatch):
    import importlib.metadata

    from ssl_dynamics.inspect import pipeline

    pipeline.code_version.cache_clear()
    before = pipeline.code_version()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda dist: "0.0-other" if dist == "openTSNE" else real(dist))
    pipeline.code_version.cache_clear()
    try:
        assert pipeline.code_version() != before
    finally:
        monkeypatch.undo()
        pipeline.code_version.cache_clear()
    assert pipeline.code_version() == before


def test_the_store_steps_share_one_state_taken_before_they_read(analysed, tmp_path, monkeypatch):
    """A store that grows while the r_t analyses run (an `inspect submit rt` job) must not
    give the later ones a newer stamp than the data they were computed from."""
    from ssl_dynamics.inspect import rtdata

    run = private_copy(analysed[0], tmp_path)
    calls = []
    real = rtdata.store_state

    def counted(path):
        calls.append(path)
        return real(path) + str(len(calls))  # a different state on every call

    monkeypatch.setattr(rtdata, "store_state", counted)
    run_all(run, "--redo", "all")
    assert len(calls) == 1


def test_partial_results_and_missing_digests_are_not_recorded(tmp_path):
    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.inspect.pipeline import StepRecord, _Session, run_tracked

    out = Outputs(tmp_path)
    sess = _Session(None, out, StepRecord(out), lambda *_: None, ())

    def step(partial):
        def fn():
            out.write_table("class_rt", [{"setup": "simclr"}])
            return {"partial": partial}
        return fn

    run_tracked(sess, "classes", step(True), lambda: "stamp")
    assert not sess.record.current("classes", "stamp")
    run_tracked(sess, "classes", step(False), lambda: "stamp")
    assert sess.record.current("classes", "stamp")
    sess.record.save("classes", "stamp", {"tables/class_rt.csv": None}, {})
    assert not sess.record.current("classes", "stamp")  # nothing vouched for a missing digest


def test_a_step_computed_again_says_which_of_its_options_changed(tmp_path):
    """An analysis computed again because its options differ from those it last succeeded
    with here says which, in one line (e.g. `make demo`'s --p0 range, then a bare `all`);
    the same options, --redo, or a record without options say nothing."""
    from ssl_dynamics.inspect.outputs import Outputs
    from ssl_dynamics.inspect.pipeline import StepRecord, _Session, run_tracked

    out, said = Outputs(tmp_path), []
    sess = _Session(None, out, StepRecord(out), said.append, ())

    def fn():
        out.write_table("binomial_chi2", [{"setup": "simclr"}])
        return {}

    run_tracked(sess, "binomial", fn, lambda: "a", {"setups": ["simclr"], "p0s": "range"})
    run_tracked(sess, "binomial", fn, lambda: "a", {"setups": ["simclr"], "p0s": "range"})  # up to date
    assert not [s for s in said if s.startswith("note:")]
    run_tracked(sess, "binomial", fn, lambda: "b", {"setups": ["simclr"], "p0s": (0.25, 0.5)})
    assert [s for s in said if s.startswith("note:")] == [
        "note: binomial last ran here with other options (p0s: 'range' -> [0.25, 0.5]); "
        "its outputs are made again with these"], said
    said.clear()
    run_tracked(sess, "binomial", fn, lambda: "c", {"setups": ["simclr"], "p0s": [0.25, 0.5]})  # same, as JSON
    sess.redo = ("binomial",)
    run_tracked(sess, "binomial", fn, lambda: "d", {"setups": ["simclr", "supervised"], "p0s": None})
    sess.redo = ()
    sess.record.save("binomial", "e", {"tables/binomial_chi2.csv": "x"}, {})  # recorded without options
    run_tracked(sess, "binomial", fn, lambda: "f", {"setups": ["simclr"], "p0s": None})
    assert not [s for s in said if s.startswith("note:")], said


def test_a_group_rewritten_with_other_content_is_noticed(tmp_path):
    """Group digests survive the file being rewritten (dimension-scale references, string
    coordinates) and change with the content."""
    import numpy as np

    from ssl_dynamics.inspect.outputs import Outputs, group_digest

    out = Outputs(tmp_path)
    coords = {"classes/names": np.array(["cat", "dog"], dtype=object)}
    out.write_arrays("classes", {"r": np.arange(4.0).reshape(2, 2)}, coords=coords)
    written = out.group_digests["classes"]
    assert written is not None and group_digest(out.analysis, "classes") == written
    out.write_arrays("other", {"x": np.zeros(3)})  # the file is rewritten around the group
    assert group_digest(out.analysis, "classes") == written
    Outputs(tmp_path).write_arrays("classes", {"r": np.arange(4.0).reshape(2, 2) + 1}, coords=coords)
    assert group_digest(out.analysis, "classes") != written


def test_an_analysis_file_open_for_writing_elsewhere_is_not_called_damaged(tmp_path, monkeypatch):
    """HDF5 refuses to open a file another program holds for writing ("unable to lock
    file"): that is one line to close it there, not a damaged file moved aside."""
    import h5py
    import numpy as np

    from ssl_dynamics.inspect.outputs import Outputs

    out = Outputs(tmp_path)
    out.write_arrays("dynamics", {"a": np.arange(3)})

    def locked(*_a, **_k):
        raise OSError("Unable to synchronously open file (unable to lock file, errno = 11)")

    monkeypatch.setattr(h5py, "File", locked)
    with pytest.raises(UserError, match="is open for writing in another program"):
        out.check_analysis()
    monkeypatch.undo()
    assert not list(tmp_path.glob("analysis.h5.corrupt-*"))


def test_all_takes_rts_store_and_bank_options_and_reads_that_store(analysed, tmp_path):
    """`inspect all --store S --bank B --probes K --simclr-batch b`: rt builds B and fills S,
    and the store analyses read S (their messages used to advise these options, which only
    `inspect rt` had)."""
    import h5py

    from ssl_dynamics.inspect.rtdata import load_rt

    done, _ = analysed
    run = private_copy(done, tmp_path)
    store, bank = tmp_path / "k16.zarr", tmp_path / "k16.h5"
    r = run_all(run, "--store", store, "--bank", bank, "--probes", 16, "--replays", 2,
                "--simclr-batch", 4, "--bank-seed", 3, "--group", 2)
    assert store.is_dir() and bank.is_file()
    assert {"dynamics", "binomial", "heterogeneity", "classes", "examples"} <= computed(r.output)
    assert {"probe", "tsne", "kl", "activations"} <= up_to_date(r.output)  # no store read
    assert all(d.correct.shape[-1] == 16 for d in load_rt(store).values())
    with h5py.File(bank, "r") as f:
        assert f.attrs["seed"] == 3
    with h5py.File(run / "inspect" / "analysis.h5", "r") as f:  # the analyses saw 16 probes
        assert all(f["dynamics"][s]["r_t"].shape[-1] == 16 for s in load_rt(store))


def test_redo_embed_means_the_two_steps_of_inspect_embed():
    from ssl_dynamics.inspect.pipeline import parse_redo

    assert parse_redo("embed") == ("tsne", "kl")
    assert parse_redo("dynamics,embed,kl") == ("dynamics", "tsne", "kl")


def test_summary_names_analyses_computed_in_part(tmp_path):
    """A KL undefined for one setup (its panel says why) keeps the others' matrices: `all`
    finishes without a skip, and its summary names the analysis as computed in part."""
    from ssl_dynamics.inspect.pipeline import _Session, summary

    sess = _Session(None, None, None, print, ())
    sess.partial.append("kl")
    assert summary(sess, tmp_path / "skipped.json") == \
        "done: no analysis skipped; computed in part: kl (the notes say what is missing)"


def test_a_checkpoint_retrained_and_evaluated_again_changes_the_state(tiny_run, tmp_path):
    """Same checkpoints evaluated, same done flags, same store: only the sha256 record tells
    that one chunk now holds another checkpoint's results, and analyses must recompute."""
    import shutil

    from _util import private_copy, quiet, rt
    from conftest import TINY_BANK
    from ssl_dynamics import artifacts as art
    from ssl_dynamics.inspect.rtdata import store_state
    from ssl_dynamics.train.grid import train_grid
    from ssl_dynamics.train.loop import TrainOptions

    run = private_copy(tiny_run, tmp_path)
    store = run / "inspect" / "rt.zarr"
    rt(run, setups=["supervised"], **TINY_BANK)
    first = store_state(store)
    paths = art.RunPaths(run)
    before = art.read_json(paths.manifest("supervised", 0))["checkpoints"]
    shutil.rmtree(paths.seed_dir("supervised", 0))
    from dataclasses import replace

    cfg = replace(art.load_run_config(run)[0], seeds=(0,))
    train_grid(run, cfg, ["supervised"], TrainOptions(device="cpu", checkpoint_dtype="bf16"),
               progress=False, echo=quiet)  # other bytes for every epoch but 0
    assert art.read_json(paths.manifest("supervised", 0))["checkpoints"] != before
    assert rt(run, setups=["supervised"], **TINY_BANK)["evaluated"] > 0
    assert store_state(store) != first

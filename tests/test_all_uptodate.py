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
    (["--redo", "tsne,foo"], "--redo 'tsne,foo'")])
def test_bad_options_stop_all_before_any_write(tiny_rt, tmp_path, args, message):
    run = private_copy(tiny_rt, tmp_path)
    before = snapshot(run)
    r = CliRunner().invoke(cli, ["all", str(run), *FAST, *args])
    assert isinstance(r.exception, UserError) and message in str(r.exception), r.output + repr(r.exception)
    assert "== dynamics" not in r.output
    assert snapshot(run) == before

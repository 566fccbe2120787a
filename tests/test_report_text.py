"""The HTML report says what the outputs of this run show: the box of skipped analyses lists
only analyses that are still missing, and the sentences state the run's own numbers."""
import base64
import html
import json
import os
import re
import time

import h5py
import numpy as np
import pytest
from _util import private_copy, quiet
from click.testing import CliRunner

from ssl_dynamics.inspect.cli import cli
from ssl_dynamics.inspect.outputs import Outputs


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


@pytest.fixture(scope="module")
def analysed(tiny_rt, tmp_path_factory):
    """The tiny evaluated run with the outputs the sentences describe: Fig. 4.5 (binomial),
    Table B.1 (probe of one setup) and Fig. 5.4 (activations of one setup, 2 gradient steps,
    the default 36 channels asked for: more than blocks 1-3 of the smoke network have)."""
    root = private_copy(tiny_rt, tmp_path_factory.mktemp("report_text"))
    invoke("binomial", root, "--null-sims", "20", "--draws", "2")
    invoke("probe", root, "--device", "cpu", "--setup", "supervised")
    invoke("activations", root, "--device", "cpu", "--steps", "2", "--no-progress",
           "--setup", "random_labels")
    return root


def _page(run) -> str:
    invoke("report", run)
    return (run / "inspect" / "report" / "index.html").read_text()


def _boxed(page: str) -> list[str]:
    box = re.search(r"<div class=skipped>(.*?)</div>", page)
    return re.findall(r"<li><b>(.*?)</b>", box.group(1)) if box else []


def _what(page: str, title: str) -> str:
    """The sentence under the section whose title starts with `title`."""
    m = re.search(rf"<h2>{re.escape(title)}[^<]*</h2><p class=what>(.*?)</p>", page)
    assert m, f"no section {title!r}"
    return html.unescape(m.group(1))


def test_skipped_box_drops_analyses_that_succeeded_since(analysed, tmp_path):
    """`inspect all` skipped kl (singular covariances), activations and tsne; kl then ran on
    its own with shrinkage. The box lists activations (its outputs predate skipped.json: an
    earlier run's, so they are not shown) and tsne (no outputs), no longer kl, whose figure
    is on the page."""
    from ssl_dynamics.inspect.features import FeatureCache
    from ssl_dynamics.inspect.representations import run_kl
    from ssl_dynamics.inspect.workspace import open_workspace

    run = private_copy(analysed, tmp_path)
    work = run / "inspect"
    now = time.time()
    for f in ("figures/fig5_4_activations.png", "tables/activations.json"):
        os.utime(work / f, (now - 100, now - 100))
    record = work / "skipped.json"
    record.write_text(json.dumps([
        {"analysis": "kl", "reason": "covariance of class 0 is not positive definite"},
        {"analysis": "activations", "reason": "RuntimeError: out of memory"},
        {"analysis": "tsne", "reason": "ValueError: perplexity too large"}]))
    os.utime(record, (now - 50, now - 50))
    page = _page(run)
    assert _boxed(page) == ["kl", "activations", "tsne"]
    assert "alt='fig5_2_kl'" not in page

    ws = open_workspace(run, echo=quiet)
    run_kl(FeatureCache(ws, "cpu", echo=quiet), Outputs(work), list(ws.run.cfg.setups), shrinkage=1e-3)
    page = _page(run)
    assert "alt='fig5_2_kl'" in page
    assert _boxed(page) == ["activations", "tsne"]
    # a still-skipped analysis's old outputs are an earlier run's: named in the box, not shown
    assert "alt='fig5_4_activations'" not in page and "<h2>Fig. 5.4" not in page
    assert json.loads(record.read_text())[0]["analysis"] == "kl"  # the record itself is `all`'s


def test_sentences_state_the_runs_numbers(analysed):
    page = _page(analysed)
    tables = analysed / "inspect" / "tables"
    probe = json.loads((tables / "tableB_1_probe.json").read_text())["rows"]
    d = probe[0]["dim"]
    assert d == 32  # smoke preset: width 4, 8 x width
    text = _what(page, "Table B.1")
    assert f"frozen {d}-d representation" in text and "512" not in text

    acts = json.loads((tables / "activations.json").read_text())["rows"]
    text = _what(page, "Fig. 5.4")
    assert "36" not in text
    for block, width in zip(range(1, 5), (4, 8, 16, 32)):
        live = sorted({r["channels"] for r in acts if r["block"] == block})
        span = str(live[0]) if len(live) == 1 else f"{live[0]}-{live[-1]}"
        shown = f"block {block}: {span}" + (f" of {width}" if live[0] != width else "")
        assert shown in text, (shown, text)

    text = _what(page, "Fig. 4.5")
    with h5py.File(analysed / "inspect" / "analysis.h5") as f:
        k = f["binomial/simclr/probe"].shape[0]
    assert k == 24  # TINY_BANK: fewer than 20 x 50, so not every 50th image
    assert "50th" not in text
    assert text.startswith(f"Every image of the r_t-sorted probe set (K = {k} images)")


@pytest.mark.parametrize("k, drawn, expected", [
    (1024, 21, "Every 50th image of the r_t-sorted probe set (K = 1024 images)"),
    (45, 23, "Every 2nd image of the r_t-sorted probe set (K = 45 images)"),
    (63, 21, "Every 3rd image of the r_t-sorted probe set (K = 63 images)"),
    (45, 5, None)])  # drawn with some other step: no number rather than a wrong one
def test_spread_step_from_the_arrays(tmp_path, k, drawn, expected):
    from ssl_dynamics.inspect.report import spread_text

    out = Outputs(tmp_path)
    arrays = {"simclr/probe": np.arange(k), "simclr/spread_0/order": np.arange(drawn),
              "supervised/probe": np.arange(k), "supervised/spread_0/order": np.arange(drawn)}
    out.write_arrays("binomial", arrays, {"setups": ["simclr", "supervised"]})
    text = spread_text(tmp_path)
    assert (text is None) if expected is None else text.startswith(expected)


@pytest.mark.parametrize("rows, expected", [
    ([(1, 4, 0), (2, 8, 0), (1, 3, 1), (2, 8, 0)], "block 1: 3-4 of 4, block 2: 8."),
    ([(1, 6, 0), (2, 5, 1), (1, 6, 0), (2, 4, 2)], "block 1: 6, block 2: 4-5 of 6."),
    ([(1, 6, None), (1, 2, None)], "block 1: 2-6.")])  # a table without no_live_channel
def test_channels_per_block_from_the_table(tmp_path, rows, expected):
    from ssl_dynamics.inspect.report import activations_text

    Outputs(tmp_path).write_table("activations", [
        {"setup": f"s{i}", "block": b, "channels": c, "no_live_channel": m}
        for i, (b, c, m) in enumerate(rows)])
    assert activations_text(tmp_path).endswith(expected)


def test_a_skipped_rt_stays_listed_though_its_store_was_touched(tmp_path):
    # the store's metadata is written as soon as an evaluation starts or is submitted
    from ssl_dynamics.inspect.report import still_skipped

    skipped = [{"analysis": "rt", "reason": "no checkpoint"}]
    (tmp_path / "rt.zarr").mkdir()
    (tmp_path / "rt.zarr" / "zarr.json").write_text("{}")
    assert still_skipped(tmp_path, skipped, 0) == skipped


def test_examples_figures_of_an_earlier_run_are_not_shown(analysed, tmp_path):
    """`inspect examples` then `inspect examples --setup supervised`: the grids of the other
    setups and the rank-agreement figure (one setup has none) are the first run's."""
    run = private_copy(analysed, tmp_path)
    invoke("examples", run, "--no-progress")
    page = _page(run)
    assert "Hardest probe images: SimCLR" in page and "alt='examples_rank_agreement'" in page
    invoke("examples", run, "--no-progress", "--setup", "supervised")
    assert (run / "inspect" / "figures" / "examples_hardest_simclr.png").exists()
    page = _page(run)
    assert "alt='examples_hardest_supervised'" in page
    assert "examples_hardest_simclr" not in page and "Hardest probe images: SimCLR" not in page
    assert "alt='examples_rank_agreement'" not in page


def test_the_header_names_the_setups_of_the_outputs(tiny_rt, tmp_path):
    run = private_copy(tiny_rt, tmp_path)
    invoke("classes", run, "--setup", "supervised,random_labels")
    page = _page(run)
    assert "Setups in these outputs: supervised, random_labels (the run has" in page


def test_unreadable_outputs_are_named_not_fatal(analysed, tmp_path):
    run = private_copy(analysed, tmp_path)
    work = run / "inspect"
    (work / "tables" / "notes_of_mine.json").write_text("[1, 2")  # not the report's
    (work / "tables" / "class_rt.json").write_text("")
    (work / "figures" / "fig4_4_binomial_noise.png").write_bytes(b"")
    (work / "figures" / "fig4_3_binomial_counts.png").write_bytes(b"GIF89a garbage")
    page = _page(run)
    assert "could not read tables/class_rt.json" in page
    assert "could not read figures/fig4_4_binomial_noise.png (empty file)" in page
    assert "could not read figures/fig4_3_binomial_counts.png (not a PNG image)" in page
    assert "notes_of_mine" not in page
    assert all(base64.b64decode(i)[:4] == b"\x89PNG"
               for i in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page))


def test_report_failure_alone_is_one_line(analysed, tmp_path, monkeypatch, capsys):
    import sys

    from ssl_dynamics.inspect import report
    from ssl_dynamics.inspect.cli import main

    run = private_copy(analysed, tmp_path)

    def broken(*_a, **_kw):
        raise KeyError("setups")

    monkeypatch.setattr(report, "expand_sections", broken)
    monkeypatch.setattr(sys, "argv", ["inspect", "report", str(run)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "cannot build the report" in err

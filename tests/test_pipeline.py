"""End to end through the command lines: a tiny phase-one run, every inspect command, the report."""
import base64
import json
import re
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ssl_dynamics.config import override, preset
from ssl_dynamics.inspect.cli import cli
from ssl_dynamics.train.grid import train_grid
from ssl_dynamics.train.loop import TrainOptions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline") / "run"
    cfg = override(preset("smoke"), ["epochs=3", "batch_size=16", "train_subset=64"])
    train_grid(root, replace(cfg, seeds=(0, 1, 2)), list(cfg.setups), TrainOptions(device="cpu"),
               progress=False, echo=lambda *_: None)
    return root


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def test_inspect_commands_end_to_end(run):
    out = invoke("rt", run, "--replays", "4", "--simclr-batch", "16", "--device", "cpu", "--no-progress")
    assert "evaluated 48 checkpoints" in out  # 4 setups x 3 seeds x epochs 0..3
    out = invoke("dynamics", run, "--epochs", "1,3")
    assert "aligned_epochs" in out
    invoke("binomial", run)
    invoke("classes", run)
    figs = run / "inspect" / "figures"
    for name in ["fig4_1_sorted_rt", "fig4_2_aligned", "fig4_3_binomial_counts", "fig4_4_binomial_noise",
                 "fig4_5_aug_spread", "figB_1_first_second", "fig5_3_class_rt"]:
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.pdf").exists()
    with h5py.File(run / "inspect" / "analysis.h5") as f:
        assert {"dynamics", "binomial", "classes"} <= set(f)
    mae = json.loads((run / "inspect" / "tables" / "table4_2_mae.json").read_text())["rows"]
    assert {r["setup"] for r in mae} == {"simclr", "supervised", "random_labels", "random_labels_aug"}
    assert all(r["mae_mean"] is None or 0 <= r["mae_mean"] <= 1 for r in mae)
    chi = json.loads((run / "inspect" / "tables" / "table4_1_chisquare.json").read_text())["rows"]
    assert len(chi) == 12  # 4 setups x 3 p0 values


def test_inspect_all_and_report(run, tmp_path):
    local = tmp_path / "run"
    shutil.copytree(run, local)
    out = invoke("all", local, "--device", "cpu", "--steps", "5", "--shrinkage", "0.5", "--no-progress")
    report = local / "inspect" / "report" / "index.html"
    assert f"report: {report}" in out
    page = report.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) >= 10
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    for title in ["Table B.1", "Fig. 5.1", "Fig. 5.2", "Fig. 5.4", "Table 4.1", "Configuration",
                  "Per-example difficulty", "Hardest probe images: SimCLR", "Cross-setup agreement"]:
        assert title in page
    skipped = json.loads((local / "inspect" / "skipped.json").read_text())
    assert "examples" not in {s["analysis"] for s in skipped}
    assert len(pd.read_parquet(local / "inspect" / "tables" / "examples.parquet")) == 4 * 64
    probe = json.loads((local / "inspect" / "tables" / "tableB_1_probe.json").read_text())["rows"]
    assert [r["model"] for r in probe] == ["simclr", "supervised", "random_labels", "random_labels_aug",
                                            "random_init", "raw_pixels"]
    assert all(0 <= r["test_acc"] <= 1 for r in probe) and probe[0]["seeds"] == 3
    with h5py.File(local / "inspect" / "analysis.h5") as f:
        assert {"probe", "tsne", "kl", "activations"} <= set(f)
        assert f["kl/simclr_kl"].shape == (10, 10) and np.isfinite(f["kl/simclr_kl"][:]).all()
    # the cached representations are reused: a second probe extracts nothing; its random-init
    # baseline is the same network and input whatever --setup lists (the first setup here
    # feeds [0, 1] pixels, the baseline the normalized ones of the first classifier setup)
    out = invoke("probe", local, "--device", "cpu", "--setup", "supervised")
    assert "extracting" not in out
    again = json.loads((local / "inspect" / "tables" / "tableB_1_probe.json").read_text())["rows"]
    init = [next(r for r in rows if r["model"] == "random_init") for rows in (probe, again)]
    assert init[0] == init[1] and init[0]["epoch_choice"] == "initialization: supervised's epoch 0, normalized input"
    # a seed without the epoch asked for is named, not silently left out of the mean
    (local / "checkpoints" / "supervised" / "seed-02" / "epoch-0003.safetensors").unlink()
    out = invoke("probe", local, "--device", "cpu", "--setup", "supervised", "--epoch", "3")
    assert "supervised: seed 2 has no checkpoint at epoch 3 and is left out (2 of 3 seeds averaged)" in out, out
    rows = json.loads((local / "inspect" / "tables" / "tableB_1_probe.json").read_text())["rows"]
    assert rows[0]["model"] == "supervised" and rows[0]["seeds"] == 2 and out.count("left out") == 1


def test_report_on_an_empty_inspect_dir(run, tmp_path):
    local = tmp_path / "bare"
    shutil.copytree(run / "checkpoints", local / "checkpoints")
    for f in ("run.json", "random_labels.npy"):
        shutil.copy(run / f, local / f)
    assert "(no analysis outputs yet: run `inspect all` first)" in invoke("report", local)
    assert "No analysis outputs yet" in (local / "inspect" / "report" / "index.html").read_text()
    r = CliRunner().invoke(cli, ["report", str(local), "--work", str(tmp_path / "none")])
    assert "--work" in str(r.exception) and "no such folder" in str(r.exception), r.output
    assert not (tmp_path / "none").exists()  # a mistyped --work makes no empty report


def test_analysis_errors_are_one_line(run, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from ssl_dynamics.inspect.cli import main; main()"]
    r = subprocess.run(cmd + ["dynamics", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "not a run directory" in r.stderr and r.stderr.count("\n") == 1
    bare = tmp_path / "bare"
    shutil.copytree(run / "checkpoints", bare / "checkpoints")
    for f in ("run.json", "random_labels.npy"):
        shutil.copy(run / f, bare / f)
    r = subprocess.run(cmd + ["dynamics", str(bare)], capture_output=True, text=True)
    assert r.returncode == 2 and "no r_t store" in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run(cmd + ["probe", str(run), "--epoch", "99", "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 2 and "has epochs 0-3, not 99" in r.stderr

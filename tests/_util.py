"""Small shared helpers for the tests (not fixtures)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from ssl_dynamics.inspect.rt import BankRequest, EvalOptions, Selection, compute_rt, parse_shard
from ssl_dynamics.inspect.workspace import open_workspace


def quiet(*_args, **_kw) -> None:
    return None


def checkpoint_drift(root_a, root_b, setup: str, seed: int, epoch: int) -> float:
    """Largest |difference| of the floating-point tensors of one checkpoint in two runs."""
    from ssl_dynamics import artifacts as art

    a, _ = art.load_checkpoint(art.RunPaths(root_a).checkpoint(setup, seed, epoch))
    b, _ = art.load_checkpoint(art.RunPaths(root_b).checkpoint(setup, seed, epoch))
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def rt(run, store=None, *, setups=None, epochs=None, shard=None, allow_missing=False, device="cpu",
       bf16=False, verify=True, n_probe=None, n_replays=None, bank_seed=None, simclr_batch=None,
       bank_path=None, data_root=None, dataset=None, work=None, progress=False, echo=quiet, group=1):
    """compute_rt with keyword arguments, for tests."""
    ws = open_workspace(run, work, echo=echo)
    select = Selection(tuple(setups) if setups else None, tuple(epochs) if epochs else None,
                       parse_shard(shard), allow_missing)
    return compute_rt(ws, select, EvalOptions(device, bf16, verify, progress, group),
                      BankRequest(n_probe, n_replays, bank_seed, simclr_batch, bank_path), store,
                      {"dataset": dataset, "data_root": data_root}, echo=echo)


def make_old_style(store) -> None:
    """Turn an r_t store into one as written before dimension names and coordinates existed:
    no `dimension_names`, no `coordinates` attribute, no coordinate arrays, no consolidated
    metadata (chunk files untouched)."""
    import json
    import shutil
    from pathlib import Path

    from ssl_dynamics.inspect import storedims

    store = Path(store)
    for meta_file in sorted(store.rglob("zarr.json")):
        folder = meta_file.parent
        if not meta_file.exists():  # inside a coordinate array removed just before
            continue
        if folder.name in storedims.COORD_DIMS and folder.parent != store:
            shutil.rmtree(folder)
            continue
        meta = json.loads(meta_file.read_text())
        meta.pop("dimension_names", None)
        meta.pop("consolidated_metadata", None)
        meta.get("attributes", {}).pop("coordinates", None)
        meta_file.write_text(json.dumps(meta, indent=2))


def private_copy(src, tmp_path, name="run"):
    """A copy of a shared fixture's run directory that a test may damage."""
    import shutil

    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def main_result(main, args, monkeypatch, capsys, prog: str = "prog") -> tuple[int, str, str]:
    """A CLI's `main` run as a user runs it, in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [prog, *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


TRAIN_RUN = [sys.executable, "-c", "from ssl_dynamics.train.cli import main; main()", "run"]


def kill_train_run_at(args: list[str], out, target, env=None) -> int:
    """Start `train run ARGS --out OUT` in a real process and SIGKILL it as soon as the file
    `target` exists (or it ended, or 120 s passed): a crash at an arbitrary point of the grid.
    Returns the exit status: -9 when the kill landed before the process ended."""
    proc = subprocess.Popen(TRAIN_RUN + args + ["--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not Path(target).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def force_channels(model, block: int, dead=(), alive=()):
    """Make channels of `block` of a CifarResNet18 never fire (dead) or always fire (alive) on
    any patch in [0, 1): the last BN before the block's final ReLU decides."""
    import torch

    bn = model.stages[block - 1][-1].bn2
    with torch.no_grad():
        for c in dead:
            bn.weight[c], bn.bias[c] = 0.0, -1e6
        for c in alive:
            bn.bias[c] = 1e3
    return model


def fake_activation_workspace(tmp_path, monkeypatch, nets: dict, epoch: int = 3):
    """A run whose setups' checkpoints are `nets` (Network), at `epoch`, seed 0, for
    `run_activations`: the epoch as asked for, each checkpoint loaded as a copy of its net."""
    import copy
    from types import SimpleNamespace

    from ssl_dynamics import artifacts as art
    from ssl_dynamics.inspect import activation_figure

    paths = art.RunPaths(tmp_path / "run")
    files = {}
    for setup, net in nets.items():
        paths.seed_dir(setup, 0).mkdir(parents=True)
        paths.checkpoint(setup, 0, epoch).touch()
        files[paths.checkpoint(setup, 0, epoch)] = net
    ws = SimpleNamespace(run=SimpleNamespace(cfg=SimpleNamespace(seeds=[0], backbone="resnet18_cifar"),
                                             paths=paths))
    monkeypatch.setattr(activation_figure, "resolve_epoch", lambda run, setup, e: (epoch, "asked for"))
    monkeypatch.setattr(art, "load_network", lambda path, verify: (copy.deepcopy(files[path]), None))
    return ws

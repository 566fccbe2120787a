"""Small shared helpers for the tests (not fixtures)."""
from __future__ import annotations

from ssl_dynamics.inspect.rt import BankRequest, EvalOptions, Selection, compute_rt, parse_shard
from ssl_dynamics.inspect.workspace import open_workspace


def quiet(*_args, **_kw) -> None:
    return None


def rt(run, store=None, *, setups=None, epochs=None, shard=None, allow_missing=False, device="cpu",
       bf16=False, verify=True, n_probe=None, n_replays=None, bank_seed=None, simclr_batch=None,
       bank_path=None, data_root=None, dataset=None, work=None, progress=False, echo=quiet):
    """compute_rt with keyword arguments, for tests."""
    ws = open_workspace(run, work, echo=echo)
    select = Selection(tuple(setups) if setups else None, tuple(epochs) if epochs else None,
                       parse_shard(shard), allow_missing)
    return compute_rt(ws, select, EvalOptions(device, bf16, verify, progress),
                      BankRequest(n_probe, n_replays, bank_seed, simclr_batch, bank_path), store,
                      {"dataset": dataset, "data_root": data_root}, echo=echo)

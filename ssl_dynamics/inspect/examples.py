"""Per-example difficulty from the stored arrays: forgetting, first-learned epoch, data maps.

`run_examples` reads the `SetupRt` of each setup (no checkpoint, no forward pass) and, with
the measures of `example_measures`, writes

- the per-example table ``tables/examples.parquet`` and ``tables/examples.csv``: one row
  per (setup, probe image); columns in `TABLE_COLUMNS` order, then ``rt_ref<t>``;
- table ``examples_summary``: one row per setup (the report shows it);
- table and figure ``examples_rank_agreement``: Spearman correlation across setups of the
  images' first-learned epochs;
- figures ``examples_cartography`` (a data map per setup), ``examples_forgetting`` (the
  distribution of forgetting events) and, when the probe images are given,
  ``examples_hardest_<setup>`` / ``examples_easiest_<setup>`` (image grids);
- analysis.h5 group ``examples``: ``<setup>/<column>`` over dimension ``probe``,
  ``<setup>/forgetting_hist`` over ``n_events``, ``rank_agreement_rho``.

``rt_ref<t>`` is r_t at the epoch of the row's setup aligned (eq. 4.4, as `dynamics`) to
epoch t of the reference setup (simclr, else the first). SimCLR's correctness is partner
identification within the fixed batches of the bank (the first view), the thesis's notion.
Missing checkpoints (``inspect rt --allow-missing``) are skipped, never read as zeros, and
counted in ``n_missing_checkpoints``. A setup with no evaluated epoch >= ``start_epoch`` has
NaN measures, an NA ``hardness_rank`` and no image grids, and a note names it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .. import artifacts as art
from ..deps import need
from ..errors import UserError
from ..progress import bar
from . import example_figures as ef
from . import example_measures as em
from .dynamics import reference_alignment
from .nulls import rank_agreement
from .outputs import Outputs
from .plots import compress_ints
from .rtdata import SetupRt

TABLE = "examples"
ID_COLUMNS = ("setup", "probe", "dataset_index", "source_index", "source_file", "label", "target",
              "class_name")  # source_*: where the bank (or the dataset) says each image comes from
MEASURE_COLUMNS = ("first_learned_median", "never_learned_share", "forgetting_mean",
                   "forgetting_seed_std", "unforgettable_share", "never_correct_share",
                   "confidence", "confidence_seed_std", "variability", "correctness",
                   "n_seeds", "n_missing_checkpoints")
TABLE_COLUMNS = ID_COLUMNS + MEASURE_COLUMNS + ("hardness_rank",)
INT_COLUMNS = {"probe", "dataset_index", "source_index", "label", "target", "n_seeds", "n_missing_checkpoints",
               "hardness_rank"}
RT_COLUMN = "rt_ref{}"  # r_t at the epoch aligned to reference epoch {}
PARQUET_KEY = b"ssl_dynamics"  # Parquet schema metadata: how the table was made (JSON)


@dataclass(frozen=True)
class ExampleOptions:
    start_epoch: int = em.DEFAULT_START_EPOCH  # epochs before it take no part (0 = init)
    ref_setup: str | None = None  # None: simclr, else the first setup
    ref_epochs: tuple[int, ...] | None = None  # None: the thesis's that exist, else a spread
    by: str = "correctness"  # hardness measure of the image grids and `hardness_rank`
    n_grid: int = 32  # hardest and easiest images shown per setup (a 4 x 8 grid each)
    progress: bool = True


def run_examples(data: dict[str, SetupRt], out: Outputs, opts: ExampleOptions = ExampleOptions(),
                 images: np.ndarray | None = None, class_names: Sequence[str] | None = None,
                 image_note: str | None = None, store_state: str | None = None,
                 sources: dict[str, np.ndarray] | None = None) -> dict:
    """Every output listed in the module docstring. ``images``: uint8 [K, 3, H, W] probe
    images in the store's probe order (None: no image grids; ``image_note`` says why).
    ``sources``: table columns [K] that say where each probe image comes from
    (``source_index``, ``source_file``; `export.probe_images`).
    ``store_state`` is recorded in the Parquet metadata (see `rtdata.store_state`).
    Returns ``{"tables", "figures", "notes", "table"}``."""
    if not data:
        raise UserError("no setups to analyse")
    _check_options(opts, data)
    al = reference_alignment(data, opts.ref_setup, opts.ref_epochs)
    ref_setup, ref_epochs, aligned, notes = al.ref_setup, al.ref_epochs, al.aligned, al.notes
    empty = [s for s, d in data.items() if _last_evaluated(d) < opts.start_epoch]
    if empty:
        notes.append(_empty_note(data, empty, opts.start_epoch))
    columns, sums = {}, {}
    progress = bar(len(data), "per-example measures", "setup", opts.progress)
    for s, d in data.items():
        columns[s], sums[s] = _measures(d, opts, ref_epochs, aligned[s], s not in empty)
        if sums[s]["n_missing_checkpoints"]:
            notes.append(_missing_note(d, opts.start_epoch))
        progress.update(1)
    progress.close()
    aligned_epochs = {s: [int(data[s].epochs[e]) for e in aligned[s]] for s in data}
    note = _table_note(ref_setup, ref_epochs, aligned_epochs, opts.start_epoch)
    note += f" {_empty_note(data, empty, opts.start_epoch)}" if empty else ""
    frame = examples_frame(data, columns, class_names, sources)
    meta = {"note": note, "ref_setup": ref_setup, "ref_epochs": ref_epochs,
            "aligned_epochs": aligned_epochs, "options": asdict(opts), "store_state": store_state}
    if _defaults_in_all_but_name(opts) and _defaults_choose(data, ref_setup, ref_epochs):
        meta["same_as_defaults"] = True  # while the store holds what it did (export checks its state)
    table = write_frame(out, frame, meta)
    rows = _summary_rows(data, columns, sums, ref_epochs, aligned_epochs)
    out.write_table("examples_summary", rows, note="Per setup: " + note)
    rho, agreement = _agreement(data, columns, notes)
    out.write_table("examples_rank_agreement", agreement,
                    note="Spearman rank correlation of the images' median first-learned epochs "
                         "between two setups (images with a NaN on either side dropped). "
                         "censored_a/b: of the n_images compared, those more than half of the "
                         "setup's (seed, replay) pairs never learned; they tie at the censoring "
                         "value, so a large share leaves little ranking to compare.")
    _write_arrays(data, columns, sums, rho, out)
    figures = [ef.cartography(data, columns, out), ef.forgetting(sums, out)]
    if len(data) > 1:
        figures.append(ef.rank_agreement(list(data), rho, out))
    if images is None:
        notes.append(f"no probe images: the hardest/easiest grids are left out ({image_note})")
    else:
        figures += _grids({s: d for s, d in data.items() if s not in empty}, columns, images,
                          class_names, opts, out)
    # partial: without probe images the grids are missing, so `inspect all` does not call
    # this result up to date (a later run that finds the images draws them)
    return {"tables": {"examples_summary": rows}, "figures": [str(f) for f in figures],
            "notes": notes, "table": str(table), "partial": images is None}


def _check_options(opts: ExampleOptions, data: dict[str, SetupRt]) -> None:
    if isinstance(opts.start_epoch, bool) or not isinstance(opts.start_epoch, int) or opts.start_epoch < 0:
        raise UserError(f"--start-epoch must be an integer >= 0, got {opts.start_epoch!r}")
    # a setup with no evaluated checkpoint at all is refused by the alignment, by name
    last = {s: e for s, d in data.items() if (e := _last_evaluated(d)) >= 0}
    if last and all(e < opts.start_epoch for e in last.values()):
        raise UserError(f"--start-epoch {opts.start_epoch} is past the last evaluated epoch of every "
                        "setup (" + ", ".join(f"{s} {e}" for s, e in last.items())
                        + "): no epoch would take part")
    if opts.n_grid < 1:
        raise UserError(f"the image grids need at least 1 image, got {opts.n_grid}")
    if opts.by not in em.HARDNESS_DIRECTION:
        raise UserError(f"hardness measure {opts.by!r}: use one of {', '.join(em.HARDNESS_DIRECTION)}")
    first = next(iter(data.values()))
    for s, d in data.items():
        if not np.array_equal(d.probe_indices, first.probe_indices):
            raise UserError(f"setup {s} was evaluated on other probe images than {first.setup}")


def _last_evaluated(d: SetupRt) -> int:
    """The last epoch number with an evaluated checkpoint; -1 when there is none."""
    ev = np.asarray(d.valid, dtype=bool).any(axis=0)
    return int(np.asarray(d.epochs)[ev].max()) if ev.any() else -1


def _empty_note(data: dict[str, SetupRt], empty: list[str], start: int) -> str:
    last = ", ".join(f"{s} {_last_evaluated(data[s])}" for s in empty)
    return (f"no evaluated epoch >= {start} (--start-epoch) for {', '.join(empty)} (last evaluated "
            f"epoch: {last}): their measures are NaN, hardness_rank is NA and they have no image grids.")


def _defaults_in_all_but_name(opts: ExampleOptions) -> bool:
    """A reference setup or epochs given, every other option the default."""
    rest = {k: v for k, v in asdict(opts).items() if k not in ("ref_setup", "ref_epochs", "progress")}
    default = {k: v for k, v in asdict(ExampleOptions()).items() if k not in ("ref_setup", "ref_epochs", "progress")}
    return (opts.ref_setup is not None or opts.ref_epochs is not None) and rest == default


def _defaults_choose(data: dict[str, SetupRt], ref_setup: str, ref_epochs) -> bool:
    """Whether the default options would align at this reference setup and these epochs on
    this store (so that a table made with them given by name is the default one)."""
    from .dynamics import default_ref_epochs, resolve_reference

    ref = resolve_reference(data, None)
    return ref == ref_setup and list(default_ref_epochs(data[ref])[0]) == list(ref_epochs)


def _measures(d: SetupRt, opts: ExampleOptions, ref_epochs: list[int], aligned: np.ndarray,
              ranked: bool = True):
    """(per-image columns, per-setup summary) of one setup; ``ranked`` False: the setup has
    no epoch the measures use, and its hardness_rank is NaN (NA in the table)."""
    valid = np.asarray(d.valid, dtype=bool)
    epochs = np.asarray(d.epochs, dtype=np.int64)
    try:
        cols = em.example_summary(d.correct, d.p_true, valid, epochs, opts.start_epoch)
    except em.NonFiniteProbability as e:
        raise UserError(f"{d.setup}: p_true is not finite at seed {int(d.seeds[e.seed])} epoch "
                        f"{e.epoch}, a checkpoint the store marks evaluated: the store is damaged "
                        f"or that model's outputs are not finite") from None
    rt = em.rt_at(d.correct, valid, [int(e) for e in aligned])
    for row, t in enumerate(ref_epochs):
        cols[RT_COLUMN.format(t)] = rt[row]
    order = em.hardness_order(cols, opts.by)
    rank = np.full(order.size, np.nan)  # NA in the table: no epoch ranks these images
    if ranked:
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
    cols["hardness_rank"] = rank
    return cols, em.setup_summary(d.correct, valid, epochs, opts.start_epoch)


def _missing_note(d: SetupRt, start_epoch: int) -> str:
    valid = np.asarray(d.valid, dtype=bool)
    gaps = [f"seed {int(seed)} epochs {compress_ints(d.epochs[~valid[i] & (d.epochs >= start_epoch)])}"
            for i, seed in enumerate(d.seeds) if (~valid[i] & (d.epochs >= start_epoch)).any()]
    n = int((~valid & (d.epochs >= start_epoch)[None, :]).sum())
    return (f"{d.setup}: {n} checkpoint(s) not evaluated ({'; '.join(gaps)}): skipped, "
            f"transitions taken between the evaluated epochs around them")


def _table_note(ref_setup: str, ref_epochs: list[int], aligned: dict[str, list[int]], start: int) -> str:
    where = "; ".join(f"{s}: " + ", ".join(f"{t}->{e}" for t, e in zip(ref_epochs, es))
                      for s, es in aligned.items())
    return (f"measures over the evaluated epochs >= {start} of every seed and replay (SimCLR: "
            f"partner identification, first view). rt_ref<t> = r_t at the epoch of the row's "
            f"setup aligned to {ref_setup} epoch t by mean r_t (eq. 4.4): {where}.")


def examples_frame(data: dict[str, SetupRt], columns: dict[str, dict], class_names=None,
                   sources: dict[str, np.ndarray] | None = None):
    """The per-example table as a pandas DataFrame (identifying columns first)."""
    pd = need("pandas", "the per-example table")
    names = [str(c) for c in class_names or []]
    parts = []
    for s, d in data.items():
        k = len(d.probe_indices)
        labels = np.asarray(d.labels, dtype=np.int64)
        cols = {"setup": [s] * k, "probe": np.arange(k, dtype=np.int64),
                "dataset_index": np.asarray(d.probe_indices, dtype=np.int64),
                **{c: np.asarray(v) for c, v in (sources or {}).items()}, "label": labels,
                "target": np.asarray(d.targets, dtype=np.int64),
                "class_name": [names[y] if 0 <= y < len(names) else f"class {y}" for y in labels]}
        cols.update({c: _column(pd, c, v) for c, v in columns[s].items()})
        parts.append(pd.DataFrame(cols))
    frame = pd.concat(parts, ignore_index=True)
    rest = [c for c in frame.columns if c not in TABLE_COLUMNS]
    return frame[[c for c in TABLE_COLUMNS if c in frame.columns] + rest]


def _column(pd, name: str, values):
    """Integer columns as int64, or pandas' nullable Int64 where a value is missing (NaN)."""
    values = np.asarray(values)
    if name not in INT_COLUMNS or values.dtype.kind in "iu":
        return values
    if np.isnan(values).any():
        return pd.array(values, dtype="Int64")
    return values.astype(np.int64)


def write_frame(out: Outputs, frame, meta: dict):
    """tables/examples.parquet (with `meta` as JSON in its schema metadata) and .csv."""
    need("pyarrow", "the Parquet table")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           PARQUET_KEY: json.dumps(meta).encode()})
    target = out.tables / f"{TABLE}.parquet"
    with out.lock():  # the work folder's writers' lock: its temp files are then tidied safely
        with art.atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        art.write_bytes_atomic(out.tables / f"{TABLE}.csv", frame.to_csv(index=False).encode())
        out.note_files([target, out.tables / f"{TABLE}.csv"])
    return target


def read_meta(path) -> dict:
    """The metadata `write_frame` stored in a Parquet table ({} when there is none)."""
    need("pyarrow", "the Parquet table")
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(PARQUET_KEY)
    return json.loads(raw) if raw else {}


def _summary_rows(data, columns, sums, ref_epochs, aligned_epochs) -> list[dict]:
    rows = []
    for s in data:
        c, u = columns[s], sums[s]
        rows.append({"setup": s, "n_images": int(len(data[s].probe_indices)), "n_seeds": u["n_seeds"],
                     "n_excluded_seeds": u["n_excluded_seeds"],
                     "n_missing_checkpoints": u["n_missing_checkpoints"],
                     "first_learned_median": _nan_median(c["first_learned_median"]),
                     "never_learned_share": u["never_learned_share"],
                     "forgetting_mean": u["forgetting_mean"],
                     "unforgettable_image_share": u["unforgettable_image_share"],
                     "confidence_mean": _nan_mean(c["confidence"]),
                     "variability_mean": _nan_mean(c["variability"]),
                     "correctness_mean": _nan_mean(c["correctness"]),
                     **{f"epoch_ref{t}": e for t, e in zip(ref_epochs, aligned_epochs[s])}})
    return rows


def _nan_mean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _nan_median(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")


def censored(cols: dict) -> np.ndarray:
    """Images whose median first-learned epoch is the censoring value ("never", max evaluated
    epoch + 1): more than half of the pairs never learned them. (Exactly half puts the median
    of an even count midway between a learned epoch and the censoring value: no tie.)"""
    return np.asarray(cols["never_learned_share"], dtype=np.float64) > 0.5


def _agreement(data, columns, notes) -> tuple[np.ndarray, list[dict]]:
    """Spearman rho matrix [P, P] of first-learned epochs and its table rows."""
    setups = list(data)
    rho = np.eye(len(setups))
    rows = []
    for i, a in enumerate(setups):
        for j in range(i + 1, len(setups)):
            b = setups[j]
            fa, fb = columns[a]["first_learned_median"], columns[b]["first_learned_median"]
            r, p, n = rank_agreement(fa, fb)
            rho[i, j] = rho[j, i] = r
            both = np.isfinite(fa) & np.isfinite(fb)  # the images rank_agreement compares
            cens = [int((both & censored(columns[s])).sum()) for s in (a, b)]
            rows.append({"setup_a": a, "setup_b": b, "spearman_rho": r, "p_value": p, "n_images": n,
                         "censored_a": cens[0], "censored_b": cens[1]})
            if not np.isfinite(r):
                notes.append(f"rank agreement {a} vs {b} undefined: fewer than 3 images with a "
                             f"first-learned epoch on both sides, or one side constant")
            elif 2 * max(cens) > n:
                notes.append(f"rank agreement {a} vs {b} rests mostly on ties: {max(cens)} of the "
                             f"{n} images were never learned by more than half of the (seed, replay) "
                             f"pairs of one setup, and share its censored first-learned epoch")
    return rho, rows


def _write_arrays(data, columns, sums, rho, out: Outputs) -> None:
    arrays, dims, coords = {}, {}, {}
    setups = list(data)
    coords.update({"setup_a": np.asarray(setups), "setup_b": np.asarray(setups)})
    arrays["rank_agreement_rho"], dims["rank_agreement_rho"] = rho, ("setup_a", "setup_b")
    for s, d in data.items():
        coords[f"{s}/probe"] = np.asarray(d.probe_indices, dtype=np.int64)
        hist = np.asarray(sums[s]["forgetting_hist"], dtype=np.int64)
        coords[f"{s}/n_events"] = np.arange(hist.size, dtype=np.int64)
        arrays[f"{s}/forgetting_hist"], dims[f"{s}/forgetting_hist"] = hist, ("n_events",)
        arrays[f"{s}/label"], dims[f"{s}/label"] = np.asarray(d.labels, np.int64), ("probe",)
        for name, values in columns[s].items():
            arrays[f"{s}/{name}"], dims[f"{s}/{name}"] = np.asarray(values), ("probe",)
    out.write_arrays(TABLE, arrays, {"setups": setups}, dims=dims, coords=coords)


def _grids(data, columns, images, class_names, opts: ExampleOptions, out: Outputs) -> list:
    """The hardest and easiest probe images of every setup, as two image grids each."""
    images = np.asarray(images)
    k = len(next(iter(data.values())).probe_indices)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != k:
        raise ValueError(f"images must be uint8 [K={k}, C, H, W], got {images.dtype} {images.shape}")
    names = [str(c) for c in class_names or []]
    figures = []
    for s, d in data.items():
        order = np.argsort(columns[s]["hardness_rank"])
        n = min(opts.n_grid, order.size)
        shuffled = not np.array_equal(d.targets, d.labels)  # random labels: show the trained one
        for kind, idx in (("hardest", order[:n]), ("easiest", order[::-1][:n])):
            captions = [_caption(int(d.labels[i]), int(d.targets[i]), names, shuffled,
                                 opts.by, columns[s][opts.by][i]) for i in idx]
            figures.append(ef.image_grid(images[idx], captions, s, kind, opts.by, out))
    return figures


def _caption(label: int, target: int, names: list[str], shuffled: bool, by: str, value: float) -> str:
    name = (lambda y: names[y] if 0 <= y < len(names) else str(y))
    lines = [name(label)] + ([f"trained: {name(target)}"] if shuffled else [])
    return "\n".join(lines + [f"{value:.2f}" if np.isfinite(value) else "n/a"])

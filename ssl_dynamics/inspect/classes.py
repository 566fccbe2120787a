"""Per-class learning dynamics (Fig. 5.3, eq. 5.3): mean r_t over the probe images of a class.

`run_classes` writes figure ``fig5_3_class_rt`` (one panel per setup, one line per true
class against the epoch), table ``class_rt`` (per setup and class: probe images, mean r_t
at the last evaluated epoch, first epoch at which the class mean reaches 0.5) and the
analysis.h5 group ``classes`` (``<setup>/{epochs,n_seeds,class_mean_r_t,n_images}``, with
named dimensions: coordinates ``<setup>/epoch`` and ``<setup>/class``, the class names).
Classes are the TRUE classes (`SetupRt.labels`), also for the random-label setups.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError
from . import stats as st
from .outputs import Outputs
from .plots import class_colors, new_figure, seed_count_note, seeds_tag, setup_label
from .rtdata import SetupRt, absent_seeds, require_evaluated

REACH_LEVEL = 0.5  # table column: first epoch with class mean r_t >= this


def _class_names(class_names: Sequence[str] | None, n: int) -> list[str]:
    names = [str(c) for c in (class_names or [])]
    return [names[c] if c < len(names) else f"class {c}" for c in range(n)]


def _n_classes(data: dict[str, SetupRt], class_names, notes: list[str]) -> int:
    n_classes = len(class_names or [])
    for s, d in data.items():
        lab = np.asarray(d.labels)
        if lab.size and lab.min() < 0:
            raise UserError(f"{s}: negative class label in the probe set")
        n_classes = max(n_classes, int(lab.max()) + 1 if lab.size else 0)
    if n_classes == 0:
        raise UserError("no classes: empty probe set")
    if class_names and len(class_names) < n_classes:
        notes.append(f"only {len(class_names)} class names for {n_classes} classes; "
                     "the rest are numbered")
    return n_classes


def _setup_classes(s: str, d: SetupRt, names: list[str], notes: list[str]) -> tuple[list[dict], tuple, dict]:
    """Rows, figure curves and arrays of one setup."""
    valid, epochs = np.asarray(d.valid, dtype=bool), np.asarray(d.epochs)
    ev = np.flatnonzero(valid.any(axis=0))
    require_evaluated({s: d})
    n_seeds = st.seeds_per_epoch(valid)
    notes += [n for n in [seed_count_note(s, n_seeds, epochs, absent_seeds(d))] if n]
    labels = np.asarray(d.labels).astype(np.int64)
    cm = st.per_class_mean(st.r_t(d.correct, valid), labels, len(names))  # [E, C]
    n_img = np.bincount(labels, minlength=len(names))
    last, cand = int(ev[-1]), st.searchable(epochs)
    rows = []
    for c, name in enumerate(names):
        reach = st.first_epoch_reaching(cm[:, c], REACH_LEVEL, cand) if n_img[c] else None
        rows.append({"setup": s, "class": name, "n_images": int(n_img[c]),
                     "last_epoch": int(epochs[last]), "mean_rt_last": float(cm[last, c]),
                     "epoch_reaching_0.5": None if reach is None else int(epochs[reach])})
    empty = [names[c] for c in range(len(names)) if n_img[c] == 0]
    if empty:
        notes.append(f"{s}: no probe images of class {', '.join(empty)}")
    arrays = {f"{s}/epochs": epochs.astype(np.int64), f"{s}/n_seeds": n_seeds,
              f"{s}/class_mean_r_t": cm, f"{s}/n_images": n_img}
    return rows, (ev, cm, n_seeds), arrays


def run_classes(data: dict[str, SetupRt], out: Outputs, class_names: Sequence[str] | None) -> dict:
    """Fig. 5.3 and table ``class_rt`` for every setup in `data`.

    ``class_names[y]`` names class y; missing names become "class y". Returns
    ``{"tables": {"class_rt": rows}, "figures": [png], "notes": [str]}``.
    """
    if not data:
        raise UserError("no setups to analyse")
    notes: list[str] = []
    names = _class_names(class_names, _n_classes(data, class_names, notes))
    rows, curves, arrays = [], {}, {"class_names": np.asarray(names, dtype="S")}
    # a parent group's unlabelled dataset would give its sub-groups phony dimensions too
    dims: dict[str, tuple[str, ...]] = {"class_names": ("class",)}
    coords: dict[str, np.ndarray] = {"class": np.asarray(names)}
    for s, d in data.items():
        setup_rows, curves[s], setup_arrays = _setup_classes(s, d, names, notes)
        rows += setup_rows
        arrays.update(setup_arrays)
        coords.update({f"{s}/epoch": np.asarray(d.epochs, dtype=np.int64), f"{s}/class": np.asarray(names)})
        dims.update({f"{s}/epochs": ("epoch",), f"{s}/n_seeds": ("epoch",),
                     f"{s}/class_mean_r_t": ("epoch", "class"), f"{s}/n_images": ("class",)})
    figure = _fig_classes(data, curves, names, out)
    out.write_arrays("classes", arrays, {"setups": list(data), "class_names": names, "notes": notes},
                     dims=dims, coords=coords)
    out.write_table("class_rt", rows,
                    note="Eq. 5.3: mean r_t over the probe images of each true class; "
                         f"epoch_reaching_0.5 = first epoch after the initialization with class "
                         f"mean >= {REACH_LEVEL} (empty if never).")
    return {"tables": {"class_rt": rows}, "figures": [str(figure)], "notes": notes}


def _fig_classes(data, curves, names, out: Outputs):
    setups = list(data)
    plt, fig, axes = new_figure(len(setups), panel_size=(5.0, 3.6), max_cols=2)
    from matplotlib.ticker import MaxNLocator

    colors = class_colors(len(names))
    for ax, s in zip(axes, setups):
        ev, cm, n_seeds = curves[s]
        x = np.asarray(data[s].epochs)[ev]
        for c, name in enumerate(names):
            y = cm[ev, c]
            if not np.isfinite(y).any():
                continue
            ax.plot(x, y, color=colors[c], lw=1.3, marker="o" if len(ev) <= 12 else None,
                    ms=3, label=name)
        ax.set_title(f"{setup_label(s)} ({seeds_tag(n_seeds[ev])})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("epoch t")
        ax.set_ylabel("class mean  $E_{x \\sim D_y}[r_t(x)]$")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = {}  # one legend for all panels, beside them: inside, it covered the curves
    for ax in axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    if handles:
        fig.legend(list(handles.values()), list(handles), title="class", loc="outside right center",
                   fontsize=8, ncol=1 if len(handles) <= 16 else 2)
    fig.suptitle("Mean $r_t$ of the probe images of each class by epoch (Fig. 5.3)")
    return out.save_figure(fig, "fig5_3_class_rt")

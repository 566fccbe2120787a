"""One self-contained HTML page with every figure and table that exists for a run.

Images are embedded as base64 PNG, so the page can be mailed or archived alone. Each item
gets a sentence saying what it shows; the run's configuration closes the page.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .. import artifacts as art
from ..train.grid import load_run_config

# (name, title, what it shows) in reading order; figures and tables share the namespace.
SECTIONS = [
    ("fig4_1_sorted_rt", "Fig. 4.1: sorted r_t curves",
     "For each setup, r_t(x) of every probe image sorted ascending, at several epochs: the "
     "probability over seeds and augmentations that the image is classified correctly."),
    ("fig4_2_aligned", "Fig. 4.2: epoch-aligned comparison",
     "Sorted r_t of every setup at the epoch whose mean r_t is closest to the reference "
     "setup's at each reference epoch (eq. 4.4)."),
    ("aligned_epochs", "Aligned epochs", "The epoch of each setup matched to each reference epoch."),
    ("table4_1_chisquare", "Table 4.1: chi-square tests against binomial noise",
     "Counts of correct seeds per image for one fixed augmentation versus Binomial(N, p̂0). "
     "The thesis-faithful statistic uses every bin (invalid where expected counts are tiny); "
     "the pooled test merges tail bins until every expected count is at least 5."),
    ("fig4_3_binomial_counts", "Fig. 4.3: observed vs binomial counts",
     "How many images were classified correctly by n of N seeds, against the binomial expectation."),
    ("fig4_3_sorted_rtilde", "Fig. 4.3 (as drawn in the thesis): sorted r̃_t vs binomial noise",
     "r̃_t for one fixed augmentation, sorted over images (solid), beside sorted binomial noise "
     "with the same mean (dashed), at the first epochs reaching each p0."),
    ("first_second_diff", "First vs second view, per epoch",
     "Mean absolute difference and correlation between r_t (and r̃_t) from first and second views."),
    ("table4_2_mae", "Table 4.2: MAE to binomial noise",
     "Mean absolute difference between sorted r_t and sorted binomial noise with the same mean "
     "(mean ± std over draws): small values mean uniform difficulty."),
    ("fig4_4_binomial_noise", "Fig. 4.4: r_t vs binomial noise", "Sorted r_t beside sorted binomial noise."),
    ("fig4_5_aug_spread", "Fig. 4.5: spread over augmentations",
     "Every 50th image of the r_t-sorted probe set: one dot per augmentation (r̃), the line is r_t."),
    ("figB_1_first_second", "Fig. B.1: first vs second SimCLR view",
     "r_t and r̃_t computed from the first views against those from the second views."),
    ("fig5_3_class_rt", "Fig. 5.3: per-class dynamics", "Mean r_t of the probe images of each class by epoch."),
    ("class_rt", "Per-class r_t", "Mean r_t per class at the last epoch and when it first reaches 0.5."),
    ("tableB_1_probe", "Table B.1: linear probes",
     "Accuracy of a linear classifier on the frozen 512-d representation, with a randomly "
     "initialised network and raw pixels as baselines."),
    ("fig5_1_tsne", "Fig. 5.1: t-SNE of the representation",
     "2-D t-SNE of a class-stratified quarter of the training set, coloured by true class."),
    ("fig5_2_kl", "Fig. 5.2: KL divergence between class Gaussians",
     "KL(N_y || N_z) between Gaussians fitted to each class's representations (log colour scale)."),
    ("kl_summary", "KL summary", "Median, smallest and largest off-diagonal KL per setup."),
    ("fig5_4_activations", "Fig. 5.4: activation maximization",
     "Inputs that maximize 36 channels of each block, found by gradient ascent, shown "
     "sigmoid-normalized."),
    ("activations", "Activation maximization runs", "Channels per block and how many never fired."),
]
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:0.8em}.what{color:#555}"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else html.escape(str(v))


def table_html(rows: list[dict], limit: int = 60) -> str:
    if not rows:
        return "<p>(empty)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows[:limit])
    more = f"<p>… {len(rows) - limit} more rows in the CSV.</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def build_report(run_dir: str | Path) -> Path:
    """Write <run>/inspect/report/index.html; returns its path."""
    run_dir = Path(run_dir)
    cfg, meta = load_run_config(run_dir)
    inspect = art.RunPaths(run_dir).inspect
    figures, tables = inspect / "figures", inspect / "tables"
    known = {name for name, _, _ in SECTIONS}
    extra = sorted({p.stem for p in list(figures.glob("*.png")) + list(tables.glob("*.json"))} - known)
    parts = [f"<h1>Learning dynamics report: {html.escape(run_dir.name)}</h1>",
             f"<p>Setups: {', '.join(cfg.setups)}; seeds: {len(cfg.seeds)}; dataset: "
             f"{html.escape(meta['dataset']['name'])} ({meta['dataset']['n_train']} train images).</p>"]
    shown = 0
    for name, title, what in SECTIONS + [(n, n, "") for n in extra]:
        png, tab = figures / f"{name}.png", tables / f"{name}.json"
        if png.exists():
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h2>{html.escape(title)}</h2><p class=what>{html.escape(what)}</p>"
                         f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
            shown += 1
        elif tab.exists():
            doc = json.loads(tab.read_text())
            parts.append(f"<h2>{html.escape(title)}</h2><p class=what>{html.escape(what)}</p>"
                         + (f"<p class=what>{html.escape(doc.get('note', ''))}</p>" if doc.get("note") else "")
                         + table_html(doc.get("rows", [])))
            shown += 1
    if not shown:
        parts.append("<p>No analysis outputs yet: run <code>inspect all</code>.</p>")
    setups_cfg = {s: sc.to_dict() for s, sc in cfg.setups.items()}
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(
        {"run": meta.get("config"), "setups": setups_cfg, "dataset": meta.get("dataset"),
         "provenance": meta.get("provenance")}, indent=2)) + "</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run_dir.name)}"
            f" report</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    target = inspect / "report" / "index.html"
    art.write_bytes_atomic(target, page.encode())
    return target

"""Every class gets its own colour in the per-class figures, whatever the number of classes."""
import numpy as np
import pytest

from ssl_dynamics.inspect.embed_figures import draw_tsne
from ssl_dynamics.inspect.plots import class_colors


@pytest.mark.parametrize("n", [2, 10, 12, 20, 37])
def test_class_colors_are_distinct(n):
    colors = class_colors(n)
    assert len(colors) == n and len(set(colors)) == n


def test_the_first_ten_are_always_tab10s():
    from matplotlib import colormaps

    tab10 = [colormaps["tab10"](c) for c in range(10)]
    assert class_colors(10) == tab10 and class_colors(12)[:10] == tab10 and class_colors(20)[:10] == tab10


def test_tsne_figure_colours_each_of_twelve_classes_apart():
    labels = np.arange(240) % 12
    emb = np.random.default_rng(0).normal(size=(240, 2))
    fig = draw_tsne({"simclr": (emb, 3, 0)}, labels, [f"class {c}" for c in range(12)], 0.25)
    points = fig.axes[0].collections[0].get_facecolors()
    by_class = {c: {tuple(p) for p in points[labels == c]} for c in range(12)}
    assert all(len(v) == 1 for v in by_class.values())  # one colour per class ...
    assert len(set().union(*by_class.values())) == 12  # ... and twelve different ones
    legend = [tuple(h.get_color()) for h in fig.legends[0].legend_handles]
    assert legend == [next(iter(by_class[c])) for c in range(12)]

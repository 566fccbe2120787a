"""The in-memory view of one setup's r_t store that every analysis reads.

Analyses never touch checkpoints or the store format: `store.load_rt` returns one
`SetupRt` per setup, built from the HDF5/Zarr arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SetupRt:
    setup: str
    correct: np.ndarray  # uint8 [S seeds, E epochs, M augmentations, K images] (SimCLR: 1st view)
    p_true: np.ndarray  # float32, same shape: softmax probability of the true class
    valid: np.ndarray  # bool [S, E]: which (seed, epoch) checkpoints were evaluated
    seeds: np.ndarray  # int [S] model seeds
    epochs: np.ndarray  # int [E] epoch numbers (index e <-> epoch epochs[e]; 0 = init)
    labels: np.ndarray  # int [K] true class of each probe image
    targets: np.ndarray  # int [K] label trained on (permuted for random-label setups)
    probe_indices: np.ndarray  # int [K] index of each probe image in the training set
    correct_second: np.ndarray | None = None  # SimCLR only: the second view, [S, E, M, K]
    p_true_second: np.ndarray | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def epoch_index(self, epoch: int) -> int:
        hits = np.nonzero(self.epochs == epoch)[0]
        if not len(hits):
            raise KeyError(epoch)
        return int(hits[0])

    def evaluated_epochs(self) -> np.ndarray:
        """Epoch numbers with at least one evaluated seed."""
        return self.epochs[self.valid.any(axis=0)]

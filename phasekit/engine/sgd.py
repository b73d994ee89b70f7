"""Mini-batch SGD on the grid: which training points each update sees.

With ``sweep.batch_size = B > 0`` every epoch visits the D training points in batches
of B drawn without replacement (the last batch of an epoch holds the D mod B left
over, if any).  The order is a permutation drawn from a generator seeded by the run's
seed and the epoch alone, so every learning rate of a seed, every rerun and every
resumed chunk sees the same batches, and several seeds stacked in one batch each see
their own.

The update at step t is then

    theta <- theta - eta (1/|B_t|) sum_{alpha in B_t} eps_alpha dz_alpha/dtheta,

the gradient of the mini-batch loss.  Since the full-batch gradient is
``(1/D) sum_alpha eps_alpha dz_alpha/dtheta`` (docs/theory.md §1), this is the model's
own full-batch step (``Model.descend``) given the errors ``w_alpha eps_alpha`` with
``w_alpha = D/|B_t|`` on the batch and 0 elsewhere: any model plugin trains with SGD
unchanged.  The forward pass stays full-batch, because the stopping rule, the recorded
loss and the sharpness are judged on the whole training set (docs/phases.md).
"""

from __future__ import annotations

import numpy as np
import torch


class MiniBatches:
    """The mini-batch weights ``w`` (G, D) of each step for rows of given seeds."""

    def __init__(self, batch_size: int, num_train: int, row_seeds: np.ndarray,
                 device: torch.device, dtype: torch.dtype):
        self.batch_size, self.num_train = batch_size, num_train
        self.row_seeds = np.asarray(row_seeds, dtype=np.int64)       # (G,) at the start
        self.device, self.dtype = device, dtype
        self.per_epoch = -(-num_train // batch_size)                 # batches per epoch
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The permutation of the training points in ``epoch`` for ``seed``."""
        key = (seed, epoch)
        if key not in self._orders:
            if len(self._orders) > 4096:                  # keep the cache small
                self._orders.clear()
            rng = np.random.default_rng([seed, epoch, 0x5D9])
            self._orders[key] = rng.permutation(self.num_train)
        return self._orders[key]

    def batch(self, seed: int, step: int) -> np.ndarray:
        """The training points update ``step`` (0-based) of a run of ``seed`` uses."""
        epoch, k = divmod(step, self.per_epoch)
        return self.order(seed, epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def weights(self, step: int, rows: torch.Tensor) -> torch.Tensor:
        """``w`` (g, D) for the active ``rows`` (indices into the original rows):
        ``D/|B_t|`` on each row's batch, 0 elsewhere."""
        seeds = self.row_seeds[rows.cpu().numpy()]
        w = np.zeros((len(seeds), self.num_train))
        for seed in np.unique(seeds):
            batch = self.batch(int(seed), step)
            w[np.ix_(seeds == seed, batch)] = self.num_train / len(batch)
        return torch.as_tensor(w, dtype=self.dtype, device=self.device)

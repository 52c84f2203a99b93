"""The evolving winner-takes-all (Makansi et al., CVPR 2019, "Overcoming limitations of mixture
density networks"), as a training schedule for ConAD's heads.

Why: under the hard WTA (the paper's eq. (2), eps = 0) a head that loses early never wins again.
In ConAD such a head is trained by the discriminator alone and drifts into a saturated
checkerboard (docs/results.md#d-at-equal-relaxation), and the eps-relaxation that keeps it alive
pulls every head towards the mean instead. The evolving WTA gives the NLL to the best k heads, k
starting at K and halving at equal intervals until it is 1 (the WTA itself) at epoch
`loss.evolving_wta_epochs`: every head first learns the data, and the heads then specialise.

The schedule is `top_k_at` (a pure function); `EvolvingWTA` applies it to `ConAD.wta_top_k` at the
start of each epoch and retraces the training step when k changes (ceil(log2 K) times a run).
Validation and scoring always use the WTA's single winner.
"""

from __future__ import annotations

import math

import keras


def top_k_at(epoch: int, epochs: int, heads: int) -> int:
    """k at a 0-based `epoch`: `heads`, halved (rounding up) ceil(log2 heads) times at equal
    intervals over the first `epochs` epochs, and 1 from epoch `epochs` on (and always 1 when
    `epochs` is 0 or there is one head)."""
    if epochs <= 0 or heads <= 1 or epoch >= epochs:
        return 1
    halvings = math.ceil(math.log2(heads))
    stage = max(epoch, 0) * halvings // epochs
    return max(1, math.ceil(heads / 2**stage))


class EvolvingWTA(keras.callbacks.Callback):
    """Sets the model's `wta_top_k` from `top_k_at` at each epoch's start; logs it as `wta_top_k`.

    Epoch numbers are `fit`'s, so a run resumed at `initial_epoch` continues the schedule. After
    `fit` the model is back to the WTA (k = 1), and its next `fit` traces a fresh step.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def _set(self, top_k: int) -> bool:
        changed = top_k != self.model.wta_top_k
        self.model.wta_top_k = top_k
        return changed

    def on_epoch_begin(self, epoch, logs=None):
        if self._set(top_k_at(epoch, self.epochs, self.model.hypotheses)):
            # `fit` calls the model's train_function afresh every step; k is a Python constant
            # of the traced step, so a new k needs a new trace.
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["wta_top_k"] = float(self.model.wta_top_k)

    def on_train_end(self, logs=None):
        if self._set(1):
            self.model.train_function = None  # the next fit traces the WTA's step

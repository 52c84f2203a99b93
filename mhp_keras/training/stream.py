"""The training data as `fit` consumes it: one repeated iterator, resumed where an uninterrupted
run would be.

`fit` on a finite dataset builds and tears down an iterator every epoch (a stall per epoch under
tf.data autotuning), so training runs on the dataset repeated; and the pipeline's shuffle and
random tiles draw anew on every pass, so a resumed run must skip the passes already made to see
what the uninterrupted run sees.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging


def repeated(ds: tf.data.Dataset):
    """The dataset repeated, with the steps of one pass, when its length is known.

    `fit` on a finite dataset builds and tears down an iterator every epoch, which with tf.data
    autotuning stalls about a second per epoch; one repeated iterator does not. Shuffling still
    happens anew on every pass. Tiled datasets have no known length and stay finite.
    """
    steps = int(ds.cardinality())
    if steps < 1:
        return ds, None
    return ds.repeat(), steps


def resumed_stream(ds: tf.data.Dataset, initial_epoch: int, steps_per_epoch: int | None):
    """The repeated training dataset from epoch `initial_epoch` on, as an uninterrupted run sees it.

    The shuffle and the random crops and tiles draw anew on every pass, from seeds that follow
    the passes made; a fresh iterator would start again at the first epoch's draws, so a resumed
    run would train on other batches than the same run uninterrupted. Skipping the passes made
    (their elements are computed and dropped, without a training step) gives the same stream.
    A dataset of unknown length (`steps_per_epoch` None) is returned as it is.
    """
    if not steps_per_epoch or initial_epoch <= 0:
        return ds
    logging.info(
        "Resuming at epoch %d: the data pipeline skips the %d batches of the earlier epochs, so "
        "that the run sees the batches an uninterrupted run would.",
        initial_epoch + 1,
        initial_epoch * steps_per_epoch,
    )
    return ds.skip(initial_epoch * steps_per_epoch)

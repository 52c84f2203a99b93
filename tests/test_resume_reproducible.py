"""A run stopped after an epoch and resumed trains on exactly the batches an uninterrupted run of
the same seed sees: the data's shuffle and random crops of later epochs do not restart."""

import csv

import numpy as np
import tensorflow as tf

from mhp_keras.training.experiment import run
from mhp_keras.training.stream import resumed_stream


def history(workdir):
    with open(workdir / "history.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_resumed_run_sees_the_data_an_uninterrupted_run_sees(tmp_path, tiny_config):
    settings = {"train.jit_compile": "false", "loss.adv_weight": 0.0}
    run(tiny_config(**settings, **{"train.epochs": 3}), str(tmp_path / "whole"), "train")
    # The same run, stopped after its first epoch and resumed from its backup.
    run(tiny_config(**settings, **{"train.epochs": 1}), str(tmp_path / "resumed"), "train")
    run(tiny_config(**settings, **{"train.epochs": 3}), str(tmp_path / "resumed"), "train")
    whole, resumed = history(tmp_path / "whole"), history(tmp_path / "resumed")
    assert len(whole) == len(resumed) == 3
    for key in ("loss", "recon", "kl", "val_loss"):
        np.testing.assert_allclose(
            [float(r[key]) for r in resumed], [float(r[key]) for r in whole], rtol=1e-5
        )


def test_the_resumed_stream_skips_whole_epochs_of_a_reshuffled_dataset():
    def stream():  # built afresh, as a resumed process builds it
        ds = tf.data.Dataset.range(12).shuffle(12, seed=3, reshuffle_each_iteration=True)
        return ds.batch(4).repeat()

    steps = 3
    whole = [b.numpy().tolist() for b in stream().take(4 * steps)]
    later = [b.numpy().tolist() for b in resumed_stream(stream(), 2, steps).take(2 * steps)]
    assert later == whole[2 * steps :]
    # What a resumed run saw before: the first epoch's order again.
    assert [b.numpy().tolist() for b in stream().take(steps)] != whole[2 * steps : 3 * steps]
    ds = stream()
    assert resumed_stream(ds, 2, None) is ds  # unknown length: nothing to skip by
    assert resumed_stream(ds, 0, steps) is ds  # a fresh run: nothing to skip

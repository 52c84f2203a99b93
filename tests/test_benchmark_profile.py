"""The training-step profiler (`benchmarks.profile_step`): its op classification on known op
names, and its smoke mode end to end (a tiny model, one traced step, no time asserted: on a
shared machine times mean nothing)."""

import json

import pytest
from absl import app

from benchmarks.profile_step import PARTS, classify, parse_sizes, run_profile

NAMES = {  # trace event names as TF 2.21 writes them for ConAD's step
    "StatefulPartitionedCall/encoder_1/conv_1_1/BiasAdd:_MklNativeFusedConv2D": "encoder forward",
    "StatefulPartitionedCall/gradient_tape/encoder_1/conv_2_1/convolution/"
    "Conv2DBackpropFilter:_MklNativeConv2DBackpropFilterWithBias": "encoder backward",
    "StatefulPartitionedCall/decoder_trunk_1/deconv_0_1/conv_transpose:"
    "_MklNativeConv2DBackpropInput": "decoder trunk forward",
    "StatefulPartitionedCall/heads_1/conv_transpose:_MklNativeConv2DBackpropInput": "heads forward",
    "StatefulPartitionedCall/gradient_tape/heads_1/conv_transpose/Conv2D:_MklNativeConv2D": (
        "heads backward"
    ),
    "StatefulPartitionedCall/conv_transpose:_MklNativeConv2DBackpropInput": "heads forward",
    "StatefulPartitionedCall/gradient_tape/discriminator_5/conv_0_1/convolution/"
    "Conv2DBackpropInput:_MklNativeConv2DBackpropInput": "discriminator backward",
    "StatefulPartitionedCall/discriminator_3/conv_top_1/BiasAdd:_MklNativeFusedConv2D": (
        "discriminator forward"
    ),
    "StatefulPartitionedCall/adam_1/Sub_18:Sub": "optimizers and clipping",
    "StatefulPartitionedCall/global_norm/L2Loss_4:L2Loss": "optimizers and clipping",
    "StatefulPartitionedCall/gradient_tape/transpose/transpose:_MklTranspose": "layout transposes",
    "StatefulPartitionedCall/sub:Sub": "NLL, WTA and losses forward",
    "StatefulPartitionedCall/gradient_tape/mul_5:Mul": "NLL, WTA and losses backward",
    "StatefulPartitionedCall/GatherV2:GatherV2": "other",
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_ops_are_classified_by_scope_and_type(name):
    assert classify(name) == NAMES[name]


def test_bad_sizes_are_named_in_the_error():
    assert parse_sizes("32,64") == [32, 64]
    for text in ("", "48", "32,x", "512"):
        with pytest.raises(app.UsageError, match="--sizes"):
            parse_sizes(text)


@pytest.mark.slow
def test_smoke_profile_reports_every_part(tmp_path):
    results = run_profile([16], "smoke", str(tmp_path), batch=4)
    row = results["by_size"]["16"]
    assert set(row["parts"]) == set(PARTS)
    assert row["op_ms_per_step"] > 0
    assert sum(p["share"] for p in row["parts"].values()) == pytest.approx(1.0)
    # The model's big parts are found by name: a step runs convolutions in all three networks.
    for part in ("encoder forward", "heads forward", "discriminator backward"):
        assert row["parts"][part]["ms"] > 0, part
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert saved["by_size"]["16"]["batch"] == 4
    assert "| heads forward |" in (tmp_path / "profile.md").read_text()

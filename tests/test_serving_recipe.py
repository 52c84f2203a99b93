"""The serving recipe of docs/serving.md (curl and Python over REST, and gRPC) sends requests
that an exported model answers like `model.score`, so a client can copy it as written.

No server runs here: the documented code runs as written against stand-ins for `requests`, `curl`
and the gRPC stub, which decode each request the way TF Serving does (a `{"b64": ...}` value is
bytes; "instances" holds one entry per image, "inputs" one list per input), call the exported
`serving_bytes` signature and answer in TF Serving's reply forms.
"""

import base64
import collections
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad
from readme_helpers import SERVING, markdown_blocks
from tensorflow.core.framework.tensor_pb2 import TensorProto
from test_export import ATOL, RTOL

from mhp_keras.serving.export import OUTPUT_KEYS, write_saved_model

HEADING = "Export and serve over REST"  # docs/serving.md
URL = "http://localhost:8501/v1/models/conad:predict"
FILES = ("image.png", "other.png")  # the files the documented clients send


def decode_like_tf_serving(body: dict) -> list[bytes]:
    """The `image_bytes` tensor TF Serving's REST API builds from a JSON request `body`."""

    def value(entry):
        if isinstance(entry, dict) and set(entry) == {"b64"}:
            return base64.b64decode(entry["b64"], validate=True)
        raise AssertionError(f"not a base64 value: {entry!r}")

    def named(entry):  # a row or column may name its single input, or be the value itself
        if isinstance(entry, dict) and "b64" not in entry:
            assert set(entry) == {"image_bytes"}, f"the signature has no input {set(entry)}"
            return entry["image_bytes"]
        return entry

    assert body["signature_name"] == "serving_bytes"
    assert ("instances" in body) != ("inputs" in body), "exactly one of instances, inputs"
    if "instances" in body:
        return [value(named(row)) for row in body["instances"]]
    return [value(entry) for entry in named(body["inputs"])]


def reply_like_tf_serving(body: dict, outputs: dict) -> dict:
    """TF Serving's JSON reply: one object per image for rows, one list per output for columns."""
    lists = {name: tensor.numpy().tolist() for name, tensor in outputs.items()}
    if "instances" in body:
        count = len(lists["anomaly_score"])
        return {"predictions": [{k: v[i] for k, v in lists.items()} for i in range(count)]}
    return {"outputs": lists}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An RGB tiny model exported once, and a folder with the documented files as RGB PNGs; the
    threshold lies between their two scores, so one is anomalous and one is not.

    RGB, because a grey PNG reaches a grey model through `convert_channels`' RGB round trip,
    which scales its pixels by the luma weights' sum (0.9999): not the pixels / 255 compared here.
    """
    model = tiny_conad(seed=0, channels=3)
    images = np.random.default_rng(0).integers(0, 256, (len(FILES), 16, 16, 3), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("client")
    for name, image in zip(FILES, images, strict=True):
        (folder / name).write_bytes(tf.io.encode_png(image).numpy())
    scores, maps = model.score(images.astype(np.float32) / 255)
    model.threshold.assign(float(scores.mean()))
    assert abs(scores[0] - scores[1]) > 1  # far from float32 noise: one of each, for sure
    path = write_saved_model(model, str(tmp_path_factory.mktemp("export") / "conad" / "1"))
    return {
        "model": model,
        "folder": folder,
        "scores": scores,
        "maps": maps,
        "signature": tf.saved_model.load(path).signatures["serving_bytes"],
    }


def check_outputs(served, outputs: dict, names: list[str]) -> None:
    """Outputs for the files `names` against `model.score` on the same decoded pixels / 255."""
    index = [FILES.index(name) for name in names]
    scores, maps = served["scores"][index], served["maps"][index]
    model = served["model"]
    assert set(outputs) == set(OUTPUT_KEYS)
    np.testing.assert_allclose(outputs["anomaly_score"], scores, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(outputs["anomaly_map"], maps, atol=ATOL, rtol=RTOL)
    flagged = scores >= float(model.threshold.numpy())
    np.testing.assert_array_equal(outputs["is_anomalous"], flagged)
    np.testing.assert_array_equal(np.asarray(outputs["normalized_score"]) >= 0.5, flagged)
    np.testing.assert_array_equal(outputs["map_size"], [[16, 16]] * len(names))
    assert np.shape(outputs["best_hypothesis"]) == (len(names), 16, 16, 3)


def fake_requests(served, sent: list) -> types.ModuleType:
    """A `requests` whose `post` answers as TF Serving would, recording every JSON body."""

    def post(url, **kwargs):
        assert url == URL
        body = json.loads(json.dumps(kwargs["json"]))  # what goes over the wire
        sent.append(body)
        contents = decode_like_tf_serving(body)
        reply = reply_like_tf_serving(body, served["signature"](image_bytes=tf.constant(contents)))
        return types.SimpleNamespace(status_code=200, json=lambda: reply)

    return types.SimpleNamespace(post=post)


@pytest.mark.slow
def test_docs_python_client_rows_and_columns(served, monkeypatch, capsys):
    sent = []
    monkeypatch.setitem(sys.modules, "requests", fake_requests(served, sent))
    monkeypatch.chdir(served["folder"])
    namespace = {}
    exec(markdown_blocks(HEADING, path=SERVING)[0], namespace)

    files = namespace["files"]
    assert [body.keys() for body in sent] == [
        {"signature_name", "instances"},
        {"signature_name", "inputs"},
    ]
    for body in sent:
        contents = decode_like_tf_serving(body)
        assert contents == [(served["folder"] / name).read_bytes() for name in files]
    rows = namespace["predictions"]
    check_outputs(served, {k: [row[k] for row in rows] for k in OUTPUT_KEYS}, files)
    check_outputs(served, namespace["outputs"], files)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and str(rows[0]["anomaly_score"]) in printed[0]


@pytest.mark.slow
def test_docs_curl_body(served):
    """The curl line's -d body, built by bash from image.png, is a row-form request."""
    command = markdown_blocks(HEADING, "bash", SERVING)[0].replace("\\\n", " ")
    (curl,) = [line for line in command.splitlines() if line.startswith("curl ")]
    assert curl.split()[2] == URL.removeprefix("http://")
    # A `curl` that prints the -d argument as bash expanded it, instead of sending it.
    print_body = 'curl() { while [ $# -gt 0 ]; do [ "$1" = -d ] && printf %s "$2"; shift; done; }'
    result = subprocess.run(
        ["bash", "-c", f"{print_body}\n{curl}"],
        cwd=served["folder"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    body = json.loads(result.stdout)
    contents = decode_like_tf_serving(body)
    assert contents == [(served["folder"] / "image.png").read_bytes()]
    outputs = served["signature"](image_bytes=tf.constant(contents))
    check_outputs(served, {k: v.numpy() for k, v in outputs.items()}, ["image.png"])


def fake_grpc_modules(served, requests: list) -> dict:
    """`grpc` and `tensorflow_serving.apis` stand-ins: a PredictRequest with TensorProto inputs,
    and a stub that runs the named signature and returns the filtered outputs as TensorProtos."""

    def request():
        return types.SimpleNamespace(
            model_spec=types.SimpleNamespace(name="", signature_name=""),
            inputs=collections.defaultdict(TensorProto),
            output_filter=[],
        )

    class Stub:
        def __init__(self, channel):
            assert channel == "localhost:8500"

        def Predict(self, request, timeout=None):
            requests.append(request)
            assert request.model_spec.name == "conad"
            assert request.model_spec.signature_name == "serving_bytes"
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            outputs = served["signature"](**inputs)
            names = request.output_filter or list(outputs)
            return types.SimpleNamespace(
                outputs={k: tf.make_tensor_proto(outputs[k].numpy()) for k in names}
            )

    apis = types.ModuleType("tensorflow_serving.apis")
    apis.predict_pb2 = types.SimpleNamespace(PredictRequest=request)
    apis.prediction_service_pb2_grpc = types.SimpleNamespace(PredictionServiceStub=Stub)
    return {
        "grpc": types.SimpleNamespace(insecure_channel=lambda target: target),
        "tensorflow_serving": types.ModuleType("tensorflow_serving"),
        "tensorflow_serving.apis": apis,
    }


@pytest.mark.slow
def test_docs_grpc_client(served, monkeypatch):
    requests = []
    for name, module in fake_grpc_modules(served, requests).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.chdir(served["folder"])
    namespace = {}
    exec(markdown_blocks("gRPC", path=SERVING)[0], namespace)

    (request,) = requests
    proto = request.inputs["image_bytes"]
    assert proto.dtype == tf.string.as_datatype_enum and len(proto.tensor_shape.dim) == 1
    index = [FILES.index(name) for name in namespace["files"]]
    np.testing.assert_allclose(namespace["scores"], served["scores"][index], atol=ATOL, rtol=RTOL)
    threshold = float(served["model"].threshold.numpy())
    np.testing.assert_array_equal(namespace["flagged"], served["scores"][index] >= threshold)

"""int8 weights rounded to each layer's least output error (tfshrink.conversion.rounding, in the
spirit of AdaRound): the greedy solver, the im2col it stands on, and convert's use of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.conversion.rounding import _Layer, greedy_rounding, patches
from tfshrink.errors import UserError
from tfshrink.tflite.flatbuffer import read


def test_greedy_rounding_lowers_the_output_error_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 24)) + rng.normal(size=(1, 24))  # correlated inputs, nonzero mean
    c = x.T @ x / len(x)
    w = rng.normal(size=(8, 24))
    scale = np.abs(w).max(axis=1) / 127 * 20  # coarse steps, so rounding matters
    q = greedy_rounding(w, scale, c)
    nearest = np.clip(np.round(w / scale[:, None]), -127, 127)

    def error(steps: np.ndarray) -> np.ndarray:
        d = steps * scale[:, None] - w
        return np.einsum("ri,ij,rj->r", d, c, d)

    assert np.all(error(q) <= error(nearest) + 1e-12) and error(q).sum() < 0.8 * error(nearest).sum()
    assert np.all(np.abs(q - w / scale[:, None]) < 1.0)  # only floor or ceil
    assert np.array_equal(q, greedy_rounding(w, scale, c))
    per_row = greedy_rounding(w, scale, np.broadcast_to(c, (8, 24, 24)).copy())
    assert np.array_equal(q, per_row)


@pytest.mark.parametrize("padding, stride, dilation", [(0, 1, 1), (1, 1, 1), (0, 2, 1), (1, 2, 1), (0, 1, 2)])
def test_patches_match_tensorflow_conv(padding: int, stride: int, dilation: int) -> None:
    tf = tfshrink._tf.tf()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 8, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)  # HWIO
    pad = "SAME" if padding == 0 else "VALID"
    want = tf.nn.conv2d(x, w, stride, pad, dilations=dilation).numpy()
    layer = _Layer("CONV_2D", "y", 0, 1, 1, (5, 3, 3, 3), np.ones(5), 1.0, 0, (padding, stride, stride, dilation,
                                                                               dilation, 1))
    got = patches(x.astype(np.float64), layer) @ w.transpose(3, 0, 1, 2).reshape(5, -1).T
    assert np.allclose(got, want.reshape(-1, 5), atol=1e-4)
    depthwise = _Layer("DEPTHWISE_CONV_2D", "y", 0, 1, 1, (1, 3, 3, 3), np.ones(3), 1.0, 0,
                       (padding, stride, stride, dilation, dilation, 1))
    dw = rng.normal(size=(3, 3, 3, 1)).astype(np.float32)
    want = tf.nn.depthwise_conv2d(x, dw, [1, stride, stride, 1], pad, dilations=[dilation, dilation]).numpy() \
        if stride == 1 or dilation == 1 else None
    if want is not None:
        p = patches(x.astype(np.float64), depthwise)  # C, k, positions
        got = np.einsum("ckp,ck->pc", p, dw[..., 0].reshape(9, 3).T)
        assert np.allclose(got, want.reshape(-1, 3), atol=1e-4)


def test_convert_rounds_weights_keeps_the_size_and_says_so(digits: builders.Digits, tmp_path: Path) -> None:
    adaptive, nearest = tmp_path / "a.tflite", tmp_path / "n.tflite"
    r = tfshrink.convert(digits.keras, adaptive, quantize="int8", calibration=digits.calibration_npz, verify=False)
    n = tfshrink.convert(digits.keras, nearest, quantize="int8", calibration=digits.calibration_npz, verify=False,
                         weight_rounding="nearest")
    assert r.defaults["weight_rounding"] == "adaptive" and n.defaults["weight_rounding"] == "nearest"
    note = next(x for x in r.notes if x.startswith("weights:"))
    assert "rounded the other way than nearest" in note and "on 80 calibration samples" in note
    assert not any(x.startswith("weights:") for x in n.notes)
    a, b = adaptive.read_bytes(), nearest.read_bytes()
    assert len(a) == len(b) and a != b and r.partitions == n.partitions == 1
    # only weight bytes moved, each by one int8 step at most
    diff = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
    steps = np.frombuffer(a, np.int8)[diff].astype(int) - np.frombuffer(b, np.int8)[diff].astype(int)
    assert np.all(np.abs(steps) == 1) and read(a).Subgraphs(0).OperatorsLength() == read(b).Subgraphs(0).OperatorsLength()
    with pytest.raises(UserError):
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="int8", calibration=digits.calibration_npz,
                         weight_rounding="stochastic")

"""tfshrink.conversion.ranges: int8 activation ranges narrowed to their least squared error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.conversion.ranges import BINS, GRID, SHRINK, best_range
from tfshrink.errors import UserError
from tfshrink.model.tflite import TFLiteModel


def _hist(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.histogram(values, bins=BINS, range=(lo, hi))[0]


def _mse(values: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255
    zero = np.round(-lo / scale)
    q = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
    return float(np.mean((q - values) ** 2))


def test_a_long_tail_is_clipped_and_the_error_is_the_grids_least() -> None:
    """A bulk near 0 and a thin tail out to 40: the chosen range clips the tail, its real int8 error
    is well under min/max's and within 2% of the best over the same candidate ends."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 100_000), rng.uniform(5, 40, 30), -rng.uniform(5, 30, 30)])
    lo, hi = float(values.min()), float(values.max())
    new_lo, new_hi = best_range(_hist(values, lo, hi), 0, lo, hi)
    assert lo < new_lo < 0 < new_hi < hi
    chosen = _mse(values, new_lo, new_hi)
    assert chosen < 0.9 * _mse(values, lo, hi)
    grid = np.linspace(SHRINK, 1.0, GRID)
    best = min(_mse(values, lo * b, hi * a) for a in grid for b in grid)
    assert chosen <= 1.02 * best


def test_a_uniform_range_is_kept() -> None:
    values = np.random.default_rng(1).uniform(-2, 3, 100_000)
    lo, hi = float(values.min()), float(values.max())
    new_lo, new_hi = best_range(_hist(values, lo, hi), 0, lo, hi)
    assert new_lo == pytest.approx(lo) and new_hi == pytest.approx(hi)


def test_exact_zeros_are_not_rounding_noise() -> None:
    """A ReLU output: most values exactly 0 (a level: no error), a tail of large ones. The range
    starts at 0; counted as noise the zeros would push towards narrower, clipping ranges."""
    rng = np.random.default_rng(2)
    values = np.concatenate([np.zeros(900_000), rng.exponential(1.0, 10_000), rng.uniform(10, 30, 20)])
    hi = float(values.max())
    counts = _hist(values, 0.0, hi)
    with_zeros = best_range(counts, int((values == 0).sum()), 0.0, hi)
    as_noise = best_range(counts, 0, 0.0, hi)
    assert with_zeros[0] == 0.0 and as_noise[0] == 0.0
    assert as_noise[1] < with_zeros[1] <= hi
    assert best_range(np.zeros(BINS, np.int64), 0, 0.0, 1.0) == (0.0, 1.0)  # nothing seen: unchanged


def test_mse_beats_minmax_on_onet_and_edges_keep_their_ranges(onet_pb: Path, tmp_path: Path) -> None:
    """ONet in strict int8 calibrated on 100 of scikit-image's 200 LFW crops (seeded draw), scored
    on the other 100: the default ranges are closer to float than TFLite's min/max (measured mean
    0.0035 vs 0.0043; over 8 such draws lower in all 8, by 20% on average), and the model's input and
    outputs keep their ranges."""
    from tfshrink.zoo.mtcnn import lfw_crops, normalize

    faces, others = lfw_crops()
    crops = np.stack([normalize(c) for c in np.concatenate([faces, others])])
    order = np.random.default_rng(0).permutation(len(crops))
    npz = tmp_path / "cal.npz"
    np.savez(npz, **{"onet/input": crops[order[:100]]})
    held = crops[order[100:]]
    with tfshrink.load(onet_pb) as source:
        expected = np.array([source.run({"onet/input": x[None]})["onet/prob1"][0, 1] for x in held])
    got, io = {}, {}
    for ranges in ("minmax", "mse"):
        out = tmp_path / f"onet_{ranges}.tflite"
        r = tfshrink.convert(onet_pb, out, quantize="int8", calibration=npz, keep_float=["none"], verify=False,
                             activation_ranges=ranges)
        assert r.precision is not None and r.precision.float_ops == {}
        with TFLiteModel(out) as model:
            got[ranges] = np.array([model.run({"onet/input": x[None]})["onet/prob1"][0, 1] for x in held])
        int8_io = tfshrink.convert(onet_pb, tmp_path / f"io_{ranges}.tflite", quantize="int8", calibration=npz,
                                   keep_float=["none"], verify=False, activation_ranges=ranges,
                                   input_type="int8", output_type="int8")
        io[ranges] = [s.quantization for s in (*int8_io.inputs, *int8_io.outputs)]
        notes = [n for n in r.notes if n.startswith("activation ranges:")]
        assert len(notes) == (1 if ranges == "mse" else 0), notes
    err = {k: float(np.abs(v - expected).mean()) for k, v in got.items()}
    assert err["mse"] < 0.9 * err["minmax"], err
    assert io["mse"] == io["minmax"]


def test_unknown_method_is_a_user_error(digits: builders.Digits, tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="int8", calibration=digits.calibration_npz,
                         activation_ranges="entropy")
    assert "--activation-ranges entropy" in exc.value.one_line()
    assert not (tmp_path / "x.tflite").exists()

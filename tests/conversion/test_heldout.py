"""convert checks on data calibration never saw (issue 15): --eval, else every 5th calibration sample
held out and named in the result; the check fails (CheckFailed, exit 1, nothing written) on a
constant source output or a cosine below the threshold, and a cosine of 0 never passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.cli import main
from tfshrink.conversion.heldout import CHECK_COSINE, _Every, check, split_calibration, stride
from tfshrink.data.calibration import Calibration
from tfshrink.errors import CheckFailed, UserError
from tfshrink.verification import OutputComparison, VerifyResult


def _samples(n: int) -> list[dict[str, np.ndarray]]:
    return [{"x": np.full((1, 2), float(i), np.float32)} for i in range(n)]


def test_every_fifth_sample_is_held_out_and_named() -> None:
    calib = Calibration("cal.npz", "arrays", _samples(100))
    rest, held = split_calibration(calib)
    assert held is not None and held.kind == "held-out" and held.held_out and held.every == 5
    assert [int(f["x"][0, 0]) for f in held.feeds] == list(range(4, 100, 5))
    assert len(rest.samples) == 80 and all(int(f["x"][0, 0]) % 5 != 4 for f in rest.samples)
    assert held.description == ("20 held-out calibration samples (every 5th: #4, #9, ..., #99), calibrated on the "
                                "other 80")
    assert held.to_json()["calibrated_on"] == 80 and held.to_json()["first"] == 4 and held.to_json()["last"] == 99
    assert len(calib.samples) == 100  # the loaded calibration is not changed
    assert any("every 5th" in n for n in rest.notes)


def test_split_sizes_and_too_few_to_split() -> None:
    assert [stride(n) for n in (1, 4, 5, 100, 500, 501, 10_000)] == [0, 0, 5, 5, 5, 6, 100]
    assert 10_000 // stride(10_000) == 100  # at most 100 held out
    calib = Calibration("cal.npz", "arrays", _samples(3))
    rest, held = split_calibration(calib)
    assert rest is calib and held is not None and not held.held_out and len(held.feeds) == 3
    assert "not held out" in held.description


def test_a_stream_stays_lazy() -> None:
    """A streamed dataset (a Sequence read afresh on every pass) is filtered, not loaded."""
    reads = []

    class Stream(list):
        def __iter__(self):  # type: ignore[override]
            reads.append(1)
            return super().__iter__()

    view = _Every(Stream(_samples(12)), 5, False)
    assert len(view) == 10 and [int(f["x"][0, 0]) for f in view[2:5]] == [2, 3, 5]
    assert int(view[-1]["x"][0, 0]) == 11 and reads


def _verification(cosine: float, constant: bool = False) -> VerifyResult:
    out = OutputComparison("probs", "probs", (4, 3), 0.5, 0.1, cosine, 0.75, True, constant)
    return VerifyResult("a", "b", 4, 0.0, 0.0, (out,))


def test_check_fails_below_the_threshold_at_zero_and_on_a_constant_output() -> None:
    check(_verification(0.995), CHECK_COSINE, "4 held-out samples", "int8")
    with pytest.raises(CheckFailed) as exc:
        check(_verification(0.95), CHECK_COSINE, "4 held-out samples", "int8")
    text = exc.value.one_line()
    assert "cosine 0.950000" in text and "top-1 agreement 75.0%" in text and "at least 0.99" in text
    assert "4 held-out samples" in text and "nothing written" in text and "--check-cosine" in text
    for floor in (0.0, -1.0):  # a cosine of 0 never passes, whatever the threshold
        with pytest.raises(CheckFailed):
            check(_verification(0.0), floor, "x", "int8")
    with pytest.raises(CheckFailed) as exc:
        check(_verification(1.0, constant=True), CHECK_COSINE, "4 held-out samples", "float16")
    assert "same for every one of the 4 checked inputs" in exc.value.one_line()


def test_int8_default_checks_on_held_out_calibration_samples(digits: builders.Digits, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d.tflite"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(digits.keras), "-o", str(out), "--quantize", "int8", "--calibration",
              str(digits.calibration_npz), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0
    v = data["verification"]
    assert v["samples"] == 20 and v["min_cosine"] == CHECK_COSINE
    assert v["data"]["kind"] == "held-out" and v["data"]["every"] == 5 and v["data"]["calibrated_on"] == 80
    assert v["inputs"].startswith("20 held-out calibration samples (every 5th: #4, #9, ..., #99), calibrated on "
                                  "the other 80")
    assert data["calibration"]["samples"] == 80
    # --no-verify writes the same bytes: the split does not depend on the check
    again = tmp_path / "again.tflite"
    tfshrink.convert(digits.keras, again, quantize="int8", calibration=digits.calibration_npz, verify=False)
    assert again.read_bytes() == out.read_bytes()


def test_eval_checks_on_other_data_and_calibrates_on_all(digits: builders.Digits, tmp_path: Path) -> None:
    held = tmp_path / "held.npz"
    np.savez(held, image=digits.x_test[:50])
    r = tfshrink.convert(digits.keras, tmp_path / "e.tflite", quantize="int8", calibration=digits.calibration_npz,
                         eval=held, eval_samples=40)
    assert len(r.calibration.samples) == 100 and r.check is not None and r.check.kind == "eval"
    assert r.verification.samples == 40 and r.verify_inputs.startswith(f"40 --eval sample(s) from {held}, "
                                                                        "calibrated on all 100 calibration samples")
    assert r.verification.outputs[0].cosine > 0.999
    # a threshold the model cannot meet: exit 1 with the numbers, nothing written
    out = tmp_path / "strict.tflite"
    with pytest.raises(CheckFailed) as exc:
        tfshrink.convert(digits.keras, out, quantize="int8", calibration=digits.calibration_npz, eval=held,
                         check_cosine=1.0)
    assert "probs: cosine 0.99" in exc.value.one_line() and "on 50 --eval sample(s)" in exc.value.one_line()
    assert not out.exists()


def test_constant_source_output_fails_the_check(tmp_path: Path) -> None:
    """A model whose output ignores its input (zero kernel): its float check used to print cosine 1
    and exit 0; agreement on a constant proves nothing, so it is a failed check."""
    tf = tfshrink._tf.tf()
    x = tf.keras.Input((4,), name="x")
    y = tf.keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="ones", name="y")(x)
    path = tmp_path / "constant.keras"
    tf.keras.Model(x, y).save(path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    out = tmp_path / "c.tflite"
    with pytest.raises(CheckFailed) as exc:
        tfshrink.convert(path, out, quantize="float16", calibration=data)
    assert "is the same for every one of the 20 checked inputs" in exc.value.one_line() and not out.exists()
    # on seeded random inputs (no data given) a constant output is a warning, as before
    r = tfshrink.convert(path, out, quantize="float16")
    assert any("is the same for every input" in w for w in r.warnings) and out.is_file()


@pytest.mark.parametrize("kwargs, message", [
    ({"eval": "random"}, "--eval random would check on random inputs"),
    ({"eval": "held.npz", "verify": False}, "--no-verify skips that check"),
    ({"check_cosine": 1.5}, "--check-cosine 1.5 is not a cosine"),
    ({"eval": "held.npz", "eval_samples": 0}, "--eval-samples 0 must be at least 1"),
])
def test_bad_eval_options_are_user_errors(kwargs: dict, message: str, digits: builders.Digits, tmp_path: Path) -> None:
    if kwargs.get("eval") == "held.npz":
        np.savez(tmp_path / "held.npz", image=digits.x_test[:5])
        kwargs = {**kwargs, "eval": tmp_path / "held.npz"}
    with pytest.raises(UserError) as exc:
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="int8", calibration=digits.calibration_npz,
                         **kwargs)
    assert message in exc.value.one_line()
    assert not (tmp_path / "x.tflite").exists()

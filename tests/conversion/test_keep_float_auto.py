"""--keep-float auto and --report: per-layer error from TF's QuantizationDebugger finds the one
layer that breaks int8, keeping it in float reaches the target on held-out data, and the cost is
reported; the target's own float ops (the output softmax for --target cpu) stay float; a target it
cannot reach within the size budget is a failed check (exit 1) that lists what was tried and
writes nothing."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.cli import main
from tfshrink.conversion import ConvertResult
from tfshrink.errors import CheckFailed, UserError
from tfshrink.model.tflite import TFLiteModel


@pytest.fixture(scope="module")
def broken(digits: builders.Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.broken_int8_pb(digits, tmp_path_factory.mktemp("broken") / "broken.pb")


@pytest.fixture(scope="module")
def auto(broken: Path, digits: builders.Digits, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConvertResult]:
    out = tmp_path_factory.mktemp("auto") / "auto.tflite"
    return out, tfshrink.convert(broken, out, quantize="int8", calibration=digits.calibration_npz,
                                 keep_float=["auto"], min_cosine=0.999, max_size_ratio=4)


def _accuracy(path: Path, digits: builders.Digits) -> float:
    model = TFLiteModel(path)
    try:
        hits = sum(int(np.argmax(model.run({"image": x[None]})["probs"]) == y)
                   for x, y in zip(digits.x_test, digits.y_test, strict=True))
    finally:
        model.close()
    return 100.0 * hits / len(digits.y_test)


def test_auto_keeps_just_the_broken_layer_and_reaches_the_target(auto: tuple[Path, ConvertResult], broken: Path,
                                                                 digits: builders.Digits, tmp_path: Path) -> None:
    path, r = auto
    a = r.auto_keep
    assert a is not None and a.reached
    assert a.int8_score.cosine < 0.9 and a.int8_score.top1_drop > 20  # plain int8 is broken
    assert [k.layer for k in a.kept] == ["fc"] and a.kept[0].op == "FULLY_CONNECTED"
    assert a.score.cosine >= 0.999 and "held-out calibration samples" in a.checked_on
    # the cpu target's own float ops stay float: the output softmax and the small first conv
    assert r.kept_float["auto"] == [a.kept[0].tensor] and "probs" in r.kept_float["default"]
    assert r.precision.float_ops == {"FULLY_CONNECTED": 1, "SOFTMAX": 1, "CONV_2D": 1}
    assert r.verification.outputs[0].cosine >= 0.999 and r.check is not None and r.check.held_out
    # the layer table: only fc is flagged, far above the 0.289 of rounding alone
    flagged = [x for x in r.layers if x.flagged]
    assert [x.layer for x in flagged] == ["fc"] and flagged[0].rmse_scale > 10 and flagged[0].kept_float
    conv = [x for x in r.layers if x.op == "CONV_2D"]
    assert conv and all(0.2 < x.rmse_scale < 0.5 for x in conv)
    # the cost: fc's weights back in float32 (sizes as written, less convert's metadata), counted
    # XNNPACK partitions, nothing timed
    assert a.int8_bytes < a.bytes <= a.budget_bytes == int(4 * a.int8_bytes)
    assert abs(r.bytes - a.bytes) < 1024 and a.partitions == a.int8_partitions == 1
    assert any("--keep-float auto" in n and "kept 1 more layer(s) in float" in n and "cost: size" in n
               for n in r.notes)
    assert not hasattr(a, "latency_ms")
    # accuracy: the kept model classifies like the float model; plain int8 does not
    plain = tmp_path / "plain.tflite"
    tfshrink.convert(broken, plain, quantize="int8", calibration=digits.calibration_npz, verify=False)
    float_path = tmp_path / "float.tflite"
    tfshrink.convert(broken, float_path, verify=False)
    base = _accuracy(float_path, digits)
    assert base > 90 and abs(_accuracy(path, digits) - base) <= 1.0 and _accuracy(plain, digits) < base - 20


def test_over_the_size_budget_is_a_failed_check_that_lists_what_it_tried(broken: Path, digits: builders.Digits,
                                                                          tmp_path: Path) -> None:
    """fc in float is 3.2x the int8 model: over the default budget (1.5x), so --keep-float auto
    skips it, cannot reach the target with the other layers, and writes nothing."""
    out = tmp_path / "over.tflite"
    with pytest.raises(CheckFailed) as exc:
        tfshrink.convert(broken, out, quantize="int8", calibration=digits.calibration_npz, keep_float=["auto"],
                         min_cosine=0.999)
    text = exc.value.one_line()
    assert "could not reach cosine >= 0.999" in text and "1.5x the int8 model" in text
    assert "fc skipped" in text and "over the size budget" in text and "tried: int8 (cosine 0." in text
    assert "nothing written" in text and "--max-size-ratio" in text
    assert exc.value.exit_code == 1 and not out.exists()


def test_cli_auto_with_top1_target_and_report(broken: Path, digits: builders.Digits, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    report = tmp_path / "report"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(broken), "-o", str(tmp_path / "b.tflite"), "--quantize", "int8", "--calibration",
              str(digits.calibration_npz), "--keep-float", "auto", "--max-top1-drop", "1", "--report", str(report),
              "--max-size-ratio", "4"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert "kept in float for --keep-float auto" in out and "top-1 drop <= 1 points" in out
    assert "worst layers (RMSE/scale" in out
    assert re.search(r"fc FULLY_CONNECTED [\d.]+ \(flagged\) \(kept in float\)", out), out
    assert "report:" in out and "layer_errors.csv" in out
    files = sorted(p.name for p in report.iterdir())
    assert files == ["layer_errors.csv", "layer_errors.png", "layer_errors.svg"]
    assert (report / "layer_errors.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (report / "layer_errors.svg").read_bytes()[:500]
    with (report / "layer_errors.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows if r["flagged"] == "True"] == ["fc"]
    assert [r["layer"] for r in rows if r["kept_float"] == "True"] == ["conv1", "fc", "probs"]  # target cpu's too
    assert {"op", "rmse_scale", "rmse", "scale", "zero_point", "tensor"} <= set(rows[0])


def test_report_without_keep_float_and_json(broken: Path, digits: builders.Digits, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--report alone: the model is the plain int8 one, the report says which layer to look at."""
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(broken), "-o", str(tmp_path / "b.tflite"), "--quantize", "int8", "--calibration",
              str(digits.calibration_npz), "--report", str(tmp_path / "r"), "--no-verify", "--json",
              "--keep-float", "none"])  # strict: the plain all-int8 model, no first conv timed in float
    data = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0
    assert data["auto_keep_float"] is None and data["kept_float"] == {}
    worst = max(data["layers"], key=lambda x: x["rmse_scale"])
    assert worst["layer"] == "fc" and worst["flagged"] and not worst["kept_float"]
    assert sorted(Path(p).name for p in data["report_files"]) == ["layer_errors.csv", "layer_errors.png",
                                                                  "layer_errors.svg"]


@pytest.mark.parametrize("kwargs, message", [
    ({"keep_float": ["auto", "fc"]}, "auto picks the layers itself"),
    ({"min_cosine": 0.99}, "targets for --keep-float auto"),
    ({"max_size_ratio": 2.0}, "size budget of --keep-float auto"),
    ({"keep_float": ["auto"], "max_size_ratio": 0.5}, "must be at least 1"),
    ({"keep_float": ["auto"], "min_cosine": 2.0}, "not a cosine"),
    ({"quantize": "float16", "report": "r"}, "--report measures per-layer int8 error"),
])
def test_bad_combinations_are_user_errors(kwargs: dict, message: str, digits: builders.Digits,
                                          tmp_path: Path) -> None:
    args = {"quantize": "int8", "calibration": digits.calibration_npz, **kwargs}
    with pytest.raises(UserError) as exc:
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", **args)
    assert message in exc.value.one_line()
    assert not (tmp_path / "x.tflite").exists()

"""`tfshrink convert` on the command line: exit codes, one error line, nothing written on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import builders
from tfshrink.cli import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def _assert_one_error_line(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["convert", "--help"], capsys)
    assert code == 0 and "Examples:" in out and "tfshrink convert" in out and "--keep-float" in out


def test_convert_int8_prints_what_it_chose(digits: builders.Digits, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "d.tflite"
    code, out, err = _run(["convert", str(digits.keras), "-o", str(out_path), "--quantize", "int8",
                           "--calibration", str(digits.images), "--preprocess", "mean=0,std=255",
                           "--keep-float", "none"], capsys)
    assert code == 0, err
    assert out_path.is_file()
    # every 5th of the 40 images is held out to check the result (issue 15): 32 calibrate, 8 check
    assert "int8" in out and "calibration: 32 images" in out and "ops left in float: none" in out
    assert "preprocess: size=8x8,mean=0,std=255,color=gray" in out
    assert "XNNPACK" in out and "cosine" in out
    assert "verified on 8 held-out calibration samples (every 5th: #4, #9, ..., #39), calibrated on the other 32" \
        in out
    assert "Traceback" not in err and "XNNPACK delegate" not in err


def test_json_output(digits: builders.Digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["convert", str(digits.keras), "-o", str(tmp_path / "d.tflite"), "--quantize", "float16",
                         "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["quantize"] == "float16" and data["bytes"] == (tmp_path / "d.tflite").stat().st_size
    (probs,) = data["verification"]["outputs"]
    assert probs["cosine"] > 0.9999 and probs["top1_agreement"] == 1.0 and "max_abs_error" in probs


def test_int8_without_calibration_exits_2(digits: builders.Digits, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "d.tflite"
    code, out, err = _run(["convert", str(digits.keras), "-o", str(out_path), "--quantize", "int8"], capsys)
    assert code == 2
    _assert_one_error_line(err)
    assert "--calibration" in err
    assert not out_path.exists() and list(tmp_path.iterdir()) == []


def test_calibration_random_warns(digits: builders.Digits, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["convert", str(digits.keras), "-o", str(tmp_path / "d.tflite"), "--quantize", "int8",
                           "--calibration", "random", "--calibration-samples", "8", "--no-verify"], capsys)
    assert code == 0
    assert "warning:" in err and "random" in err and "poor" in err
    assert "not verified (--no-verify)" in out


@pytest.mark.parametrize("case", ["empty_folder", "corrupt_only", "bad_preprocess", "missing_source",
                                  "bad_input_shape", "images_without_preprocess"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case: str, digits: builders.Digits, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    out_path = tmp_path / "out" / "d.tflite"
    out_path.parent.mkdir()
    args = ["convert", str(digits.keras), "-o", str(out_path), "--quantize", "int8", "--calibration", str(calib)]
    if case == "corrupt_only":
        (calib / "a.jpg").write_bytes(b"\xff\xd8 not really")
        args += ["--preprocess", "mean=0,std=255"]
    elif case == "bad_preprocess":
        (calib / "a.png").write_bytes(b"x")
        args += ["--preprocess", "size=8by8"]
    elif case == "missing_source":
        args[1] = str(tmp_path / "nope.keras")
    elif case == "bad_input_shape":
        args += ["--input-shape", "image=1,9,9"]
    elif case == "images_without_preprocess":
        from PIL import Image

        Image.fromarray(np.zeros((8, 8), np.uint8)).save(calib / "a.png")
    code, _, err = _run(args, capsys)
    assert code == 2, err
    _assert_one_error_line(err)
    assert list(out_path.parent.iterdir()) == []


def test_missing_ops_exit_2_naming_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conversion.test_convert import _missing_ops_pb

    pb = _missing_ops_pb(tmp_path / "linalg.pb")
    code, _, err = _run(["convert", str(pb), "-o", str(tmp_path / "linalg.tflite")], capsys)
    assert code == 2
    _assert_one_error_line(err)
    assert "MatrixInverse" in err and "--select-tf-ops" in err and "--allow-custom-ops" in err
    assert not (tmp_path / "linalg.tflite").exists()

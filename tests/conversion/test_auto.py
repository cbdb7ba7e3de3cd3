"""--quantize auto (issue 15): on held-out data it picks the smallest, fastest-by-rule model that
meets the target among int8, int8 with a few float layers, dynamic-range and float16, reports every
candidate and why, is deterministic, and fails the check (nothing written) when none meets it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.cli import main
from tfshrink.errors import CheckFailed, UserError


@pytest.fixture(scope="module")
def broken(digits: builders.Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.broken_int8_pb(digits, tmp_path_factory.mktemp("broken") / "broken.pb")


def test_int8_when_it_meets_the_target(digits: builders.Digits, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auto.tflite"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(digits.keras), "-o", str(out), "--quantize", "auto", "--calibration",
              str(digits.calibration_npz), "--max-top1-drop", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0
    auto = data["quantize_auto"]
    assert data["quantize"] == "int8" and auto["chosen"] == "int8" and data["defaults"]["quantize"] == "auto"
    names = [c["name"] for c in auto["candidates"]]
    assert names == ["int8", "int8 + float layers", "dynamic", "float16"]
    skipped = auto["candidates"][1]
    assert skipped["skipped"] == "int8 already meets the target"
    for c in (auto["candidates"][0], *auto["candidates"][2:]):
        assert c["bytes"] > 0 and c["xnnpack_partitions"] is not None and c["score"]["top1_drop"] is not None
    assert "held-out calibration samples" in auto["checked_on"] and auto["target"]["max_top1_drop"] == 1
    assert "chose int8" in auto["reason"] and "fewest XNNPACK partitions" in auto["reason"]
    assert data["verification"]["data"]["kind"] == "held-out"
    # deterministic: the same choice and bytes again
    again = tmp_path / "again.tflite"
    tfshrink.convert(digits.keras, again, quantize="auto", calibration=digits.calibration_npz, max_top1_drop=1,
                     verify=False)
    assert again.read_bytes() == out.read_bytes()


def test_a_broken_int8_layer_makes_it_choose_another_model(broken: Path, digits: builders.Digits,
                                                             tmp_path: Path) -> None:
    held = tmp_path / "held.npz"
    np.savez(held, image=digits.x_test[:60])
    r = tfshrink.convert(broken, tmp_path / "b.tflite", quantize="auto", calibration=digits.calibration_npz,
                         eval=held, min_cosine=0.999)
    a = r.auto
    assert a is not None and a.chosen.meets and not a.candidates[0].meets  # int8 misses
    assert a.candidates[0].score.cosine < 0.9
    assert r.quantize == a.chosen.mode and a.chosen.name != "int8"
    # fc in float is 3.2x int8's size, over the 1.5x budget: the int8 + float layers candidate fails
    mixed = a.candidates[1]
    assert not mixed.meets
    assert r.verification.outputs[0].cosine >= 0.999 and "--eval sample(s)" in r.verify_inputs
    assert any(n.startswith("--quantize auto: chose") and "tried: int8:" in n for n in r.notes)
    meeting = [c for c in a.candidates if c.meets]
    assert a.chosen is min(meeting, key=lambda c: c.rank())


def test_no_candidate_meets_the_target(digits: builders.Digits, tmp_path: Path) -> None:
    out = tmp_path / "none.tflite"
    with pytest.raises(CheckFailed) as exc:
        tfshrink.convert(digits.keras, out, quantize="auto", calibration=digits.calibration_npz, min_cosine=1.0)
    text = exc.value.one_line()
    assert "no candidate meets cosine >= 1" in text and "int8:" in text and "float16:" in text
    assert "nothing written" in text and not out.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"calibration": None}, "--quantize auto needs calibration data"),
    ({"keep_float": ["auto"]}, "--keep-float works with --quantize int8, not auto"),
    ({"plan": "plan.json"}, "--quantize auto chooses the mode; --plan is for --quantize int8"),
    ({"target": "int8-only"}, "--target int8-only is for --quantize int8, not auto"),
    ({"input_type": "int8"}, "needs --quantize int8"),
])
def test_bad_auto_options_are_user_errors(kwargs: dict, message: str, digits: builders.Digits, tmp_path: Path) -> None:
    args = {"quantize": "auto", "calibration": digits.calibration_npz, **kwargs}
    with pytest.raises(UserError) as exc:
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", **args)
    assert message in exc.value.one_line()
    assert not (tmp_path / "x.tflite").exists()

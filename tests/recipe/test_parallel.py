"""`tfshrink run --workers 2`: independent steps run at once as Ray tasks, and give the same
artifacts (byte for byte), cache and summary figures as a serial run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfshrink.recipe import SUMMARY, run_recipe

pytest.importorskip("ray")  # the distributed extra; CI installs it with the dev extra

RECIPE = """\
[[step]]
kind = "convert"
name = "float32"
input = "{pb}"

[[step]]
kind = "convert"
name = "float16"
input = "{pb}"
quantize = "float16"

[[step]]
kind = "convert"
name = "dynamic"
input = "{pb}"
quantize = "dynamic"

[[step]]
kind = "convert"
name = "int16x8"
input = "{pb}"
quantize = "int16x8"
calibration = "random"
calibration_samples = 8

[[step]]
kind = "verify"
name = "keras_vs_pb"
a = "{keras}"
b = "{pb}"

[[step]]
kind = "verify"
name = "pb_vs_tflite"
a = "{pb}"
b = "{tflite}"
atol = 1e-3
"""


def _artifacts(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".tfshrink-cache" not in p.parts and p.name != SUMMARY}


def _figures(out: Path) -> list[dict]:
    steps = json.loads((out / SUMMARY).read_text())["steps"]
    return [{k: v for k, v in s.items() if k != "duration_s"} for s in steps]


def test_workers_give_the_serial_run_s_artifacts_and_summary(tmp_path: Path, keras_file: Path, keras_pb: Path,
                                                             tflite_file: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(pb=keras_pb, keras=keras_file, tflite=tflite_file))
    serial = run_recipe(recipe, out=tmp_path / "serial")
    started: list[str] = []
    parallel = run_recipe(recipe, out=tmp_path / "parallel", workers=2,
                          on_step=lambda record, phase: started.append(phase))
    assert serial.passed and parallel.passed
    assert started[:6] == ["start"] * 6  # all six were out at once before the first finished
    a, b = _artifacts(tmp_path / "serial"), _artifacts(tmp_path / "parallel")
    assert sorted(a) == sorted(b) and len(a) == 6
    assert all(a[name] == b[name] for name in a), [n for n in a if a[n] != b[n]]
    assert _figures(tmp_path / "serial") == _figures(tmp_path / "parallel")
    # The driver wrote the cache: a serial rerun finds every step the workers ran.
    again = run_recipe(recipe, out=tmp_path / "parallel")
    assert [s.status for s in again.steps] == ["cached"] * 6


def test_workers_need_a_positive_count(tmp_path: Path, keras_pb: Path) -> None:
    from tfshrink.errors import UserError

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[[step]]\nkind = "convert"\ninput = "{keras_pb}"\n')
    with pytest.raises(UserError, match="--workers must be at least 1"):
        run_recipe(recipe, out=tmp_path / "out", workers=0)

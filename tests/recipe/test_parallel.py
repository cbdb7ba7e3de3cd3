"""`tfshrink run --workers 2`: independent steps run at once as Ray tasks, and give the same
artifacts (byte for byte), cache and summary figures as a serial run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def _tfrecords(folder: Path, files: int = 4, per_file: int = 5) -> str:
    """Inputs of the small Keras fixture (image 12x12x3, meta 4) as `files` TFRecord files; the spec."""
    from tfshrink import _tf

    tf = _tf.tf()
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        with tf.io.TFRecordWriter(str(folder / f"part-{k}.tfrecord")) as writer:
            for _ in range(per_file):
                feature = {"image": tf.train.Feature(float_list=tf.train.FloatList(value=rng.uniform(-1, 1, 432))),
                           "meta": tf.train.Feature(float_list=tf.train.FloatList(value=rng.uniform(-1, 1, 4)))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return "image:float32:12,12,3; meta:float32:4"


SHARDED = """\
[[step]]
kind = "verify"
name = "sharded"
a = "{keras}"
b = "{tflite}"
inputs = "records/*.tfrecord"
inputs_spec = "{spec}"
samples = 100
shards = 2
"""


def test_a_verify_step_runs_on_shards_and_merges_to_the_whole(tmp_path: Path, keras_file: Path,
                                                              tflite_file: Path) -> None:
    import tfshrink

    spec = _tfrecords(tmp_path / "records")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(SHARDED.format(keras=keras_file, tflite=tflite_file, spec=spec))
    serial = run_recipe(recipe, out=tmp_path / "serial")
    parallel = run_recipe(recipe, out=tmp_path / "parallel", workers=2)
    a = (tmp_path / "serial" / "sharded.json").read_bytes()
    assert a == (tmp_path / "parallel" / "sharded.json").read_bytes()
    assert serial.steps[0].numbers == parallel.steps[0].numbers
    merged = json.loads(a)
    whole = tfshrink.verify(keras_file, tflite_file, inputs=str(tmp_path / "records" / "*.tfrecord"),
                            inputs_spec=spec, samples=100)
    assert merged["samples"] == whole.samples == 20
    for got, want in zip(merged["outputs"], whole.outputs, strict=True):
        assert got["shape"] == list(want.shape)
        assert got["max_abs_error"] == want.max_abs
        assert got["cosine"] == pytest.approx(want.cosine, abs=1e-12)
        assert got["mean_abs_error"] == pytest.approx(want.mean_abs, rel=1e-12)
        assert got["top1_agreement"] == want.top1


def test_changing_a_shard_a_dataset_file_names_changes_its_hash(tmp_path: Path) -> None:
    from tfshrink.recipe.cache import content_hash

    _tfrecords(tmp_path / "records", files=2, per_file=2)
    dataset = tmp_path / "val.toml"
    dataset.write_text('files = "records/*.tfrecord"\nfeatures = "image:float32:12,12,3; meta:float32:4"\n')
    before = content_hash(dataset)
    shard = tmp_path / "records" / "part-1.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    assert content_hash(dataset) != before

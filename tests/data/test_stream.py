"""Datasets through tf.data (tfshrink.data.stream): the parse spec (inline, TOML, JSON), TFRecords
stored as lists, raw bytes and PNG, the dataset file, sharding by file, entry points, and the
lazy samples that calibration and verify take; with the errors each mistake gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink import _tf
from tfshrink.data import stream
from tfshrink.data.calibration import InputSpec, load_calibration
from tfshrink.data.feeds import streamed_feeds
from tfshrink.errors import UserError
from tfshrink.model.base import TensorSpec
from tfshrink.tflite.preprocess import parse_preprocess

IMAGE = [InputSpec("image", "float32", (1, 8, 8, 3))]


def _pixels(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def _write(directory: Path, pixels: np.ndarray, files: int = 3) -> Path:
    """`pixels` as Examples over `files` TFRecord files, record i in file i * files // n: `raw`
    (bytes), `png` (encoded), `floats` (float_list, /255) and `index` (int64)."""
    tf = _tf.tf()
    directory.mkdir(parents=True, exist_ok=True)
    writers = [tf.io.TFRecordWriter(str(directory / f"part-{k}.tfrecord")) for k in range(files)]
    for i, image in enumerate(pixels):
        feature = {
            "raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
            "png": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])),
            "floats": tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel() / 255.0)),
            "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
        }
        writers[i * files // len(pixels)].write(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    for writer in writers:
        writer.close()
    return directory


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("shards"), _pixels(12))


def _scaled() -> object:
    return parse_preprocess("mean=0,std=255").resolve("image", (1, 8, 8, 3))


def test_the_spec_reads_inline_toml_and_json(tmp_path: Path) -> None:
    inline = stream.parse_spec("image=input_1:uint8:28,28,1; label=y:int64")
    assert inline == (stream.Feature("image", "input_1", "uint8", (28, 28, 1)), stream.Feature("label", "y", "int64"))
    assert stream.parse_spec("image:float32:28x28x1")[0] == stream.Feature("image", "image", "float32", (28, 28, 1))
    toml = tmp_path / "spec.toml"
    toml.write_text('[features.image]\ninput = "input_1"\ndtype = "uint8"\nshape = [28, 28, 1]\n'
                    '[features.label]\ninput = "y"\ndtype = "int64"\n')
    assert stream.parse_spec(toml) == inline
    (tmp_path / "spec.json").write_text(json.dumps({"features": "image=input_1:uint8:28,28,1; label=y:int64"}))
    assert stream.parse_spec(tmp_path / "spec.json") == inline
    assert [f.text() for f in inline] == ["image=input_1:uint8:28,28,1", "label=y:int64"]


@pytest.mark.parametrize(("spec", "message"), [
    ("image", "is not FEATURE[=INPUT]:DTYPE[:SHAPE]"),
    ("image:complex64", "has dtype 'complex64'"),
    ("image:uint8:28,a", "is not D1,D2"),
    ("a=x:uint8; b=x:uint8", "feed the same input"),
    ("  ;  ", "no features to read"),
])
def test_bad_specs_are_user_errors(spec: str, message: str) -> None:
    with pytest.raises(UserError) as exc:
        stream.parse_spec(spec)
    assert message in exc.value.one_line()


def test_what_counts_as_a_stream(tmp_path: Path, shards: Path) -> None:
    assert stream.is_streamed(f"{shards}/*.tfrecord") and stream.is_streamed(shards / "part-0.tfrecord")
    assert stream.is_streamed("my_data.pipeline:make_dataset")
    assert stream.is_streamed("anything/*", spec="image:uint8")
    assert not stream.is_streamed(tmp_path) and not stream.is_streamed("photos/*.jpg")
    assert not stream.is_streamed("x.npz") and not stream.is_streamed("random")
    (tmp_path / "a:b").mkdir()  # a path that exists is never imported
    assert not stream.is_entry_point(str(tmp_path / "a:b")) and not stream.is_entry_point("a:b:c")


@pytest.mark.parametrize("spec", ["raw=image:uint8:8,8,3", "png=image:uint8:8,8,3", "floats=image:float32:8,8,3"])
def test_calibration_streams_every_storage_in_file_order(shards: Path, spec: str) -> None:
    seen: list[tuple[int, int]] = []
    preprocess = None if spec.startswith("floats") else _scaled()
    calib = load_calibration(f"{shards}/*.tfrecord", IMAGE, samples=10, spec=spec, preprocess=preprocess,
                             progress=lambda done, total: seen.append((done, total)))
    assert calib.kind == "tfrecord" and calib.candidates == 3 and len(calib.samples) == 10
    assert seen == [(i, 10) for i in range(1, 11)]  # samples processed
    assert isinstance(calib.samples, stream.Stream) and not isinstance(calib.samples, list)
    expected = _pixels(12)[:10].astype(np.float32) / 255.0
    got = np.concatenate([s["image"] for s in calib.samples])
    assert got.dtype == np.float32 and got.shape == (10, 8, 8, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([s["image"] for s in calib.samples]), got)  # every pass alike
    np.testing.assert_array_equal(calib.samples[3]["image"], got[3:4])
    assert [s["image"].shape for s in calib.samples[2:9:3]] == [(1, 8, 8, 3)] * 3
    assert "10 samples streamed from" in calib.summary() and calib.to_json()["samples"] == 10


def test_a_dataset_file_names_the_files_and_a_batch_of_two_takes_pairs(shards: Path, tmp_path: Path) -> None:
    spec = tmp_path / "calib.toml"
    spec.write_text(f'files = "{shards}/part-*.tfrecord"\nfeatures = "png=image:uint8:8,8,3"\n')
    batched = [InputSpec("image", "float32", (2, 8, 8, 3))]
    calib = load_calibration(spec, batched, samples=100, preprocess=_scaled())
    assert len(calib.samples) == 6 and calib.samples[0]["image"].shape == (2, 8, 8, 3)
    assert any("holds 6 sample(s), fewer than the 100" in n for n in calib.notes)
    relative = shards / "calib.json"  # files relative to the dataset file
    relative.write_text(json.dumps({"files": "part-*.tfrecord", "features": {"index": {"dtype": "int32"}}}))
    counted = load_calibration(relative, [InputSpec("index", "int32", (1,))], samples=50)
    assert [int(s["index"][0]) for s in counted.samples] == list(range(12))


def test_encoded_images_are_resized_to_the_spec(shards: Path) -> None:
    small = [InputSpec("image", "float32", (1, 4, 4, 3))]
    calib = load_calibration(f"{shards}/*.tfrecord", small, samples=2, spec="png=image:uint8:4,4,3",
                             preprocess=parse_preprocess("mean=0,std=1").resolve("image", (1, 4, 4, 3)))
    assert calib.samples[1]["image"].shape == (1, 4, 4, 3)


def test_sharding_is_by_file(shards: Path) -> None:
    source = stream.open_source(f"{shards}/*.tfrecord", "index=i:int64")
    assert [Path(f).name for f in stream.shard_files(source.files, 1, 2)] == ["part-1.tfrecord"]
    parts = [[int(e["i"]) for e in stream.dataset(source, shard=(k, 2)).as_numpy_iterator()] for k in range(2)]
    assert parts == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7]]  # files 0 and 2, file 1
    with pytest.raises(UserError, match="cannot be sharded by file among 4 workers"):
        stream.shard_files(source.files, 0, 4)


def test_an_entry_point_is_imported_only_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "calib_source_mod.py").write_text(
        "import numpy as np\nimport tensorflow as tf\n\n"
        "def make():\n"
        "    x = np.arange(5 * 8 * 8 * 3, dtype=np.float32).reshape(5, 8, 8, 3) / 1000\n"
        "    return tf.data.Dataset.from_tensor_slices(({'image': x}, np.arange(5))).batch(2)\n\n"
        "def wrong():\n    return [1, 2]\n")
    monkeypatch.chdir(tmp_path)
    calib = load_calibration("calib_source_mod:make", IMAGE, samples=4)
    assert calib.kind == "dataset" and len(calib.samples) == 4
    np.testing.assert_allclose(calib.samples[3]["image"].ravel()[0], 3 * 192 / 1000)
    with pytest.raises(UserError, match="returned list, not a tf.data.Dataset"):
        load_calibration("calib_source_mod:wrong", IMAGE)
    with pytest.raises(UserError, match="has no function 'absent'"):
        load_calibration("calib_source_mod:absent", IMAGE)
    with pytest.raises(UserError, match="cannot import module 'no_such_module_here'"):
        load_calibration("no_such_module_here:make", IMAGE)


@pytest.mark.parametrize(("source", "spec", "message"), [
    ("*.tfrecord", None, "need a parse spec"),
    ("*.tfrecord", "nope=image:uint8:8,8,3", "no feature 'nope'"),
    ("*.tfrecord", "raw=image:uint8:8,8,4", "holds 192 raw bytes"),
    ("*.tfrecord", "floats=image:float32:8,8", "shape [8, 8] needs 64"),
    ("*.tfrecord", "raw=other:uint8:8,8,3; index=i:int64", "no 'image' for model input"),
    ("*.tfrecord", "raw=image:uint8:4,16,3", "the model takes image: [1, 8, 8, 3]"),
    ("none-*.tfrecord", "raw=image:uint8:8,8,3", "matches no TFRecord files"),
])
def test_stream_mistakes_are_user_errors(shards: Path, source: str, spec: str | None, message: str) -> None:
    with pytest.raises(UserError) as exc:
        load_calibration(f"{shards}/{source}", IMAGE, spec=spec, preprocess=_scaled())
    assert message in exc.value.one_line()


def test_nan_in_a_stream_is_refused(tmp_path: Path) -> None:
    tf = _tf.tf()
    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
        for value in (0.5, float("nan")):
            writer.write(tf.train.Example(features=tf.train.Features(feature={"v": tf.train.Feature(
                float_list=tf.train.FloatList(value=[value] * 4))})).SerializeToString())
    with pytest.raises(UserError, match=r"NaN or infinite values \(sample 2\)"):
        load_calibration(tmp_path / "bad.tfrecord", [InputSpec("v", "float32", (1, 4))], spec="v:float32:4")


def test_verify_streams_its_inputs(keras_file: Path, tflite_file: Path, tmp_path: Path) -> None:
    tf = _tf.tf()
    rng = np.random.default_rng(1)
    with tf.io.TFRecordWriter(str(tmp_path / "inputs.tfrecord")) as writer:
        for _ in range(7):
            feature = {"image": tf.train.Feature(float_list=tf.train.FloatList(value=rng.uniform(-1, 1, 432))),
                       "meta": tf.train.Feature(float_list=tf.train.FloatList(value=rng.uniform(-1, 1, 4)))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    spec = "image:float32:12,12,3; meta:float32:4"
    feeds = streamed_feeds(tmp_path / "inputs.tfrecord", [TensorSpec("image", "float32", (None, 12, 12, 3)),
                                                         TensorSpec("meta", "float32", (None, 4))], samples=5, spec=spec)
    assert len(feeds) == 5 and feeds[4]["meta"].shape == (1, 4)
    result = tfshrink.verify(keras_file, tflite_file, inputs=tmp_path / "inputs.tfrecord", inputs_spec=spec, samples=5)
    assert result.passed and result.samples == 5


def test_a_damaged_tfrecord_file_is_a_user_error(shards: Path, tmp_path: Path) -> None:
    data = (shards / "part-1.tfrecord").read_bytes()
    (tmp_path / "a.tfrecord").write_bytes((shards / "part-0.tfrecord").read_bytes())
    middle = len(data) // 2
    (tmp_path / "b.tfrecord").write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16])
                                          + data[middle + 16:])  # a record whose checksum fails
    with pytest.raises(UserError, match="cannot read the dataset"):
        load_calibration(f"{tmp_path}/*.tfrecord", IMAGE, samples=100, spec="raw=image:uint8:8,8,3")
    (tmp_path / "a.tfrecord").write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match="cannot read as TFRecords"):
        load_calibration(f"{tmp_path}/*.tfrecord", IMAGE, samples=100, spec="raw=image:uint8:8,8,3")


def test_int8_calibration_from_tfrecords_is_deterministic(shards: Path, tmp_path: Path) -> None:
    keras = _tf.tf().keras
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu")(image)
    model = keras.Model(image, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    model.save(tmp_path / "m.keras")
    spec = tmp_path / "calib.toml"
    spec.write_text(f'files = "{shards}/part-*.tfrecord"\nfeatures = "png=image:uint8:8,8,3"\n')
    outputs = []
    for name in ("a", "b"):
        result = tfshrink.convert(tmp_path / "m.keras", tmp_path / f"{name}.tflite", quantize="int8",
                                  calibration=spec, calibration_samples=10, preprocess="mean=127.5,std=127.5")
        assert result.calibration.summary().startswith("8 samples streamed from")
        outputs.append((tmp_path / f"{name}.tflite").read_bytes())
    assert outputs[0] == outputs[1]

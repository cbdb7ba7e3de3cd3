"""Issue 13's defects found trying real models as a new user: each pinned by a test on the real
runtime (the corpus in tests/corpus runs every command on every model)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink import _tf
from tfshrink.cli import main
from tfshrink.errors import UserError, first_line


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_a_tensorflow_failure_keeps_its_reason_not_its_header() -> None:
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None], name="x")
        tf.reshape(x, [5, 7], name="bad")
    with tf.compat.v1.Session(graph=graph) as sess, pytest.raises(tf.errors.InvalidArgumentError) as exc:
        sess.run("bad:0", {"x:0": np.zeros((2, 3), np.float32)})
    assert str(exc.value).startswith("Graph execution error:")
    line = first_line(exc.value)
    assert "Input to reshape is a tensor with 6 values" in line and "node bad" in line, line
    assert not line.startswith("Graph execution error")


def test_transform_on_a_missing_file_or_a_checkpoint_is_a_clean_exit_2(
        tmp_path: Path, train_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "transform", tmp_path / "missing.pb", "-o", tmp_path / "o.pb",
                           "--transforms", "strip_unused_nodes")
    assert code == 2 and "missing.pb: no such file or folder" in err and "unexpected" not in err
    code, _, err = run_cli(capsys, "transform", train_ckpt, "-o", tmp_path / "o.pb", "--transforms",
                           "strip_unused_nodes")
    assert code == 2 and "a checkpoint model; transform rewrites a frozen GraphDef" in err and "tfshrink freeze" in err
    code, _, err = run_cli(capsys, "transform", tmp_path, "-o", tmp_path / "o.pb", "--transforms", "strip_unused_nodes")
    assert code == 2 and "unexpected" not in err


def test_compare_takes_unknown_dims_from_the_feeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keras = _tf.tf().keras
    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 3), name="img")
    out = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    path = tmp_path / "dyn.keras"
    keras.Model(image, out).save(path)
    pb = tmp_path / "dyn.pb"
    tfshrink.freeze(path, pb, shapes={"img": [1, 16, 16, 3]})
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, img=np.random.default_rng(0).normal(size=(2, 20, 20, 3)).astype(np.float32))
    code, out_text, err = run_cli(capsys, "compare", path, pb, "--inputs", feeds, "--runs", "2")
    assert code == 0, err
    assert "dyn.pb" in out_text and "1.000000" in out_text


def test_a_legacy_h5_prints_no_keras_structure_warning(legacy_h5_file: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tfshrink.verify(legacy_h5_file, legacy_h5_file, samples=1)
    assert result.passed
    assert not [w for w in caught if "structure of `inputs`" in str(w.message)]


def test_inspect_of_a_keras_model_counts_its_graph_not_tf_function_captures(h5_file: Path) -> None:
    result = tfshrink.inspect(h5_file)
    assert result.op_types["Placeholder"] == 2  # its two inputs, not one per variable
    assert result.control_edges == 0
    assert "NoOp" not in result.op_types


def test_verify_warns_when_the_reference_output_is_constant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13, scope 6: an untrained model that outputs the same numbers for every input makes any
    agreement check pass trivially; verify and convert say so."""
    keras = _tf.tf().keras
    image = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, kernel_initializer="zeros", name="conv")(image)
    probs = keras.layers.Dense(5, activation="softmax", name="probs")(keras.layers.Flatten()(h))
    path = tmp_path / "constant.keras"
    keras.Model(image, probs).save(path)
    code, _, err = run_cli(capsys, "verify", path, path)
    assert code == 0 and "output probs of" in err and "is the same for every input" in err
    result = tfshrink.convert(path, tmp_path / "c.tflite")
    assert any("is the same for every input" in w for w in result.warnings)


def _corrupt_copy(saved_model_dir: Path, dest: Path) -> Path:
    shutil.copytree(saved_model_dir, dest)
    (data,) = (dest / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:16])
    return dest


def test_a_savedmodel_both_loaders_reject_is_called_broken_with_both_reasons(
        saved_model_dir: Path, tmp_path: Path) -> None:
    broken = _corrupt_copy(saved_model_dir, tmp_path / "broken")
    with pytest.raises(UserError) as exc:
        tfshrink.inspect(broken)
    message = exc.value.message
    assert "cannot load the SavedModel: tf.saved_model.load: Read less bytes" in message, message
    assert "; TF1 loader: Read less bytes" in message, message
    assert exc.value.hint and "re-export" in exc.value.hint


def test_a_savedmodel_tag_set_can_be_chosen_and_a_wrong_one_is_named(saved_model_dir: Path) -> None:
    from tfshrink.model.savedmodel_v1 import SavedModelV1Model, pick_tags

    assert pick_tags(saved_model_dir, None) == ["serve"]
    with pytest.raises(UserError, match="tag set"):
        pick_tags(saved_model_dir, ["train"])
    with SavedModelV1Model(saved_model_dir) as model:  # the TF1 loader on a TF2 export works too
        assert model.loader.startswith("TF1 loader")
        feeds = {s.name: np.ones([1, *s.shape[1:]], np.float32) for s in model.inputs}
        with tfshrink.load(saved_model_dir, tags="serve") as reference:
            expected = reference.run(feeds)
        got = model.run(feeds)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=1e-6)


def test_signature_and_tags_pick_the_savedmodel_in_verify_bench_and_compare(
        saved_model_dir: Path, keras_pb: Path, tflite_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "verify", saved_model_dir, tflite_file, "--signature", "serving_default",
                           "--tags", "serve", "--samples", "1")
    assert code == 0, err
    code, _, err = run_cli(capsys, "verify", saved_model_dir, tflite_file, "--signature", "nosuch")
    assert code == 2 and "nosuch" in err
    code, _, err = run_cli(capsys, "bench", saved_model_dir, "--signature", "serving_default", "--runs", "1")
    assert code == 0, err
    code, _, err = run_cli(capsys, "bench", keras_pb, "--signature", "serving_default", "--runs", "1")
    assert code == 2 and "--signature" in err
    code, _, err = run_cli(capsys, "compare", keras_pb, tflite_file, "--tags", "serve", "--runs", "1")
    assert code == 2 and "none of the models is one" in err

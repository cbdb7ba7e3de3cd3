"""Issue 16: bad inputs get one line and exit 2 before any work, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_real_world import run_cli
from tfshrink import _tf


def test_an_output_named_like_another_format_is_refused(keras_file: Path, keras_pb: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["freeze", keras_file, "-o", tmp_path / "x.tflite"],
                 ["transform", keras_pb, "-o", tmp_path / "x.tflite", "--transforms", "strip_unused_nodes"],
                 ["convert", keras_file, "-o", tmp_path / "x.pb"]):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and "but the name says" in err, (args, err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--atol", "--rtol"])
def test_a_negative_tolerance_is_refused(flag: str, keras_file: Path, tflite_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "verify", keras_file, tflite_file, flag, "-1")
    assert code == 2 and f"{flag} -1.0 must be a number >= 0" in err
    code, _, err = run_cli(capsys, "freeze", keras_file, "-o", tmp_path / "f.pb", flag, "-1")
    assert code == 2 and ">= 0" in err and not (tmp_path / "f.pb").exists()


def test_a_graph_with_no_outputs_is_not_declared_matching(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(1.0, name="c")
        tf.compat.v1.placeholder(tf.float32, [2], name="x")
    pb = tmp_path / "empty.pb"
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    code, out, err = run_cli(capsys, "verify", pb, pb, "--samples", "1")
    assert code == 2 and "no outputs" in err and "outputs match" not in out
    code, _, err = run_cli(capsys, "bench", pb, "--runs", "1")
    assert code == 2 and "no outputs" in err


def test_nan_calibration_data_is_refused(keras_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "calib.npz"
    image = np.ones((4, 12, 12, 3), np.float32)
    image[0, 0, 0, 0] = np.nan
    np.savez(calib, image=image, meta=np.ones((4, 4), np.float32))
    out = tmp_path / "c.tflite"
    code, _, err = run_cli(capsys, "convert", keras_file, "-o", out, "--quantize", "int8", "--calibration", calib)
    assert code == 2 and "NaN or infinite" in err and not out.exists()


def test_names_with_rich_markup_are_printed_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        tf.identity(x * 2.0, name="out")
    graph_def = graph.as_graph_def()
    names = {"x": "x[/]in", "out": "[link=http://e.vil]out"}  # names TF's Python API would refuse
    for node in graph_def.node:
        node.name = names.get(node.name, node.name)
        for i, ref in enumerate(node.input):
            node.input[i] = names.get(ref, ref)
    pb = tmp_path / "markup.pb"
    pb.write_bytes(graph_def.SerializeToString())
    code, out, err = run_cli(capsys, "inspect", pb)
    assert code == 0, err
    assert "x[/]in" in out and "[link=http://e.vil]out" in out


def test_options_that_do_not_apply_are_refused(keras_pb: Path, keras_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "inspect", keras_pb, "--signature", "serving_default")
    assert code == 2 and "--signature picks from a SavedModel's signatures" in err
    code, _, err = run_cli(capsys, "verify", keras_file, keras_pb, "--input-shape", "nosuch=1,2")
    assert code == 2 and "--input-shape names 'nosuch', which is not an input" in err
    code, _, err = run_cli(capsys, "verify", keras_file, keras_pb, "--input-shape", "image=1,-12,12,3")
    assert code == 2 and "every dimension must be at least 1" in err
    code, _, err = run_cli(capsys, "transform", keras_pb, "--in_graph", keras_file, "-o", tmp_path / "t.pb",
                           "--transforms", "strip_unused_nodes")
    assert code == 2 and "two inputs given" in err and not (tmp_path / "t.pb").exists()


def test_a_tiny_graph_declaring_gigabytes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = _tf.tf()
    graph_def = tf.compat.v1.GraphDef()
    node = graph_def.node.add()
    node.name, node.op = "bomb", "Const"
    node.attr["dtype"].type = 1
    tensor = node.attr["value"].tensor
    tensor.dtype = 1
    tensor.tensor_shape.dim.add().size = 10**12
    tensor.float_val.append(0.0)  # one stored value, broadcast to the declared shape
    out = graph_def.node.add()
    out.name, out.op = "out", "Identity"
    out.input.append("bomb")
    out.attr["T"].type = 1
    pb = tmp_path / "bomb.pb"
    pb.write_bytes(graph_def.SerializeToString())
    assert pb.stat().st_size < 200
    for command in (["verify", pb, pb], ["bench", pb, "--runs", "1"], ["inspect", pb]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2 and "GiB" in err and "--max-memory" in err, (command, err)
    code, _, err = run_cli(capsys, "--max-memory", "1K", "inspect", pb.parent / "nothing.pb")
    assert code == 2 and "no such file" in err  # a valid size; the missing file is the error
    code, _, err = run_cli(capsys, "--max-memory", "lots", "inspect", pb)
    assert code == 2 and "'lots' is not a size" in err


def test_a_fifo_is_refused_without_hanging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    fifo = tmp_path / "f.pb"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "inspect", fifo)
    assert code == 2 and "not a regular file" in err


def test_inspect_warns_when_constants_declare_far_more_than_the_file_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = _tf.tf()
    graph_def = tf.compat.v1.GraphDef()
    node = graph_def.node.add()
    node.name, node.op = "big", "Const"
    node.attr["dtype"].type = 1
    node.attr["value"].tensor.dtype = 1
    node.attr["value"].tensor.tensor_shape.dim.add().size = 10**8
    node.attr["value"].tensor.float_val.append(0.0)
    pb = tmp_path / "big.pb"
    pb.write_bytes(graph_def.SerializeToString())
    code, out, err = run_cli(capsys, "inspect", pb)
    assert code == 0, err
    assert "warning: the constants declare 100.00M parameters in a" in out


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(
        keras_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tfshrink.fileio as fileio

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    code, _, err = run_cli(capsys, "convert", keras_file, "-o", tmp_path / "c.tflite")
    assert code == 2 and "cannot write there (Read-only file system)" in err
    monkeypatch.undo()

    class Usage:
        free = 1000

    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda _: Usage())
    code, _, err = run_cli(capsys, "freeze", keras_file, "-o", tmp_path / "f.pb")
    assert code == 2 and "the disk is full (1,000 bytes free)" in err

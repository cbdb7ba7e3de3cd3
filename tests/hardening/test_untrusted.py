"""Issue 16: a model that would write a file is not run unless the user allows it; freeze and
transform drop such ops when the outputs only wait on them; inspect flags them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_real_world import run_cli
from tfshrink import _tf
from tfshrink.graph.io_ops import allow_io_ops


@pytest.fixture(autouse=True)
def _not_allowed() -> None:
    allow_io_ops(False)
    yield
    allow_io_ops(False)


def _writer_pb(folder: Path, target: Path, *, control: bool = True) -> Path:
    """y = 2x, with a WriteFile of `target` on a control edge of y (or, with control=False, feeding
    y through a ReadFile of the same file)."""
    tf = _tf.tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        write = tf.io.write_file(str(target), "pwned", name="write")
        if control:
            with tf.control_dependencies([write]):
                tf.identity(x * 2.0, name="y")
        else:
            size = tf.cast(tf.strings.length(tf.io.read_file(str(target), name="read")), tf.float32)
            tf.identity(x * size, name="y")
    pb = folder / ("writer.pb" if control else "reader.pb")
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    return pb


@pytest.mark.parametrize("command", [["verify", "{pb}", "{pb}"], ["bench", "{pb}", "--runs", "1"],
                                     ["compare", "{pb}", "{pb}", "--runs", "1"]])
def test_a_graph_that_writes_a_file_is_not_run(command: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pwned.txt"
    pb = _writer_pb(tmp_path, target)
    code, _, err = run_cli(capsys, *[c.format(pb=pb) for c in command])
    assert code == 2 and "write (WriteFile)" in err and "--allow-io-ops" in err, err
    assert not target.exists()


def test_allowed_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pwned.txt"
    pb = _writer_pb(tmp_path, target)
    code, _, err = run_cli(capsys, "--allow-io-ops", "verify", pb, pb, "--samples", "1")
    assert code == 0, err
    assert target.read_text() == "pwned"


def test_freeze_and_transform_drop_a_writer_on_a_control_edge(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pwned.txt"
    pb = _writer_pb(tmp_path, target)
    frozen = tmp_path / "frozen.pb"
    code, _, err = run_cli(capsys, "freeze", pb, "-o", frozen, "--outputs", "y")
    assert code == 0 and "dropped 1 op(s) that touch files" in err, err
    cleaned = tmp_path / "cleaned.pb"
    code, _, err = run_cli(capsys, "transform", pb, "-o", cleaned, "--outputs", "y", "--transforms",
                           "strip_unused_nodes")
    assert code == 0 and "dropped 1 op(s) that touch files" in err, err
    for out in (frozen, cleaned):
        graph_def = _tf.graph_pb2().GraphDef.FromString(out.read_bytes())
        assert "WriteFile" not in {n.op for n in graph_def.node}
    assert not target.exists()


def test_a_reader_the_output_needs_is_refused_and_flagged(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("secret")
    pb = _writer_pb(tmp_path, target, control=False)
    code, _, err = run_cli(capsys, "verify", pb, pb)
    assert code == 2 and "read (ReadFile)" in err
    code, out, err = run_cli(capsys, "inspect", pb)
    assert code == 0 and "ops that touch files, the network or processes: read (ReadFile)" in out


def test_a_savedmodel_whose_initializer_writes_is_not_loaded(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    tf = _tf.tf()
    target = tmp_path / "pwned.txt"

    class Sneaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def serve(self, x):  # noqa: ANN001, ANN201
            tf.io.write_file(str(target), "pwned")
            return {"y": x * 2.0}

    module = Sneaky()
    folder = tmp_path / "sm"
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    code, _, err = run_cli(capsys, "inspect", folder)
    assert code == 2 and "WriteFile" in err and not target.exists()

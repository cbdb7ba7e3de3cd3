"""Acceptance: the transform_graph command users paste for MTCNN, on a frozen MTCNN in facenet's layout
(PReLU as relu/neg/mul/add, softmax as max/sub/exp/sum/realdiv) with the mtcnn package's real weights,
checked on real face and non-face crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tfshrink import _tf
from tfshrink.cli import main
from tfshrink.graph.ir import Graph
from tfshrink.zoo import mtcnn

COMMAND = [
    "--inputs=pnet/input,rnet/input,onet/input",
    "--outputs=pnet/prob1,pnet/conv4-2/biasadd,rnet/prob1,rnet/conv5-2/conv5-2,onet/prob1,onet/conv6-2/conv6-2,"
    "onet/conv6-3/conv6-3",
    "--transforms=remove_nodes(op=identity, op=checknumerics)\nfold_constants(ignore_errors=true)\nfold_batch_norms\n"
    "fold_old_batch_norms\nquantize_weights\nstrip_unused_nodes\nmerge_duplicate_nodes\nsort_by_execution_order",
]


@pytest.fixture(scope="module")
def mtcnn_pb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mtcnn")
    prefix = mtcnn.save_onet_checkpoint(folder / "ckpt", nets=("pnet", "rnet", "onet"))
    pb = folder / "mtcnn_frozen_model.pb"
    tfshrink.freeze(prefix, pb, verify=False)
    return pb


def _real_feeds() -> dict[str, np.ndarray]:
    """The astronaut's face and four non-face photo patches, at each net's own input size."""
    def crops(size: int) -> np.ndarray:
        return mtcnn.normalize(np.concatenate([mtcnn.face_crop(size)[None], mtcnn.non_face_crops(size)]))

    return {"pnet/input": crops(12), "rnet/input": crops(24), "onet/input": crops(48)}


def test_facenet_layout_fixture(mtcnn_pb: Path) -> None:
    ops = {n.op for n in tfshrink.load(mtcnn_pb).graph_def.node}
    assert {"Neg", "Relu", "Mul", "AddV2", "Max", "Exp", "Sum", "RealDiv", "Identity"} <= ops


def test_transform_graph_command_on_mtcnn(mtcnn_pb: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "quantized_mtcnn_frozen_model.pb"
    with pytest.raises(SystemExit) as exc:
        main(["transform", f"--in_graph={mtcnn_pb}", f"--out_graph={out}", *COMMAND])
    printed = capsys.readouterr()
    assert exc.value.code == 0, printed
    assert "using 'pnet/conv4-2/BiasAdd'" in printed.err and "using 'Identity'" in printed.err  # warnings: stderr

    before = Graph(tfshrink.load(mtcnn_pb).graph_def)
    after = Graph(tfshrink.load(out).graph_def)
    tf = _tf.tf()
    assert not [n.name for n in after if n.op == "Identity"]
    big = [n.name for n in before if n.op == "Const" and n.attr["dtype"].type == tf.float32.as_datatype_enum
           and tf.make_ndarray(n.attr["value"].tensor).size >= 1024]
    assert len(big) >= 8
    for name in big:  # every big weight is 8-bit behind a Dequantize under its old name
        assert after.node(name).op == "Dequantize"
        assert after.node(after.data_inputs(name)[0][0]).attr["dtype"].type == tf.quint8.as_datatype_enum
    assert out.stat().st_size <= 0.30 * mtcnn_pb.stat().st_size
    assert after.topological_order() == after.names()

    feeds = _real_feeds()
    float_out = tfshrink.load(mtcnn_pb).run(feeds)
    quant_out = tfshrink.load(out).run(feeds)
    for name in mtcnn.MTCNN_OUTPUTS:
        error = float(np.max(np.abs(float_out[name] - quant_out[name])))
        assert error <= 1e-2, f"{name}: {error}"
    # The face is still a face and the non-faces are not, in all three nets.
    for net in ("pnet", "rnet", "onet"):
        prob = quant_out[f"{net}/prob1"].reshape(5, 2)[:, 1]
        assert prob[0] > 0.5 and np.all(prob[1:] < 0.5), (net, prob)

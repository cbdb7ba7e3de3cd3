"""Quantization-aware training on TF 2.x: tf.contrib.quantize's rewrites for TF1 graphs, a
quantize_model for Keras 3, and the conversion of either to a fully int8 TFLite model whose
ranges come from training (no calibration data).

TF1 graph (the classic contrib flow)::

    with tf.Graph().as_default() as g:          # training graph
        logits = build_model(is_training=True)
        loss = ...
        tfshrink.qat.create_training_graph(g, quant_delay=2000)   # before the optimizer
        train_op = optimizer.minimize(loss, global_step=...)
        ... train, saver.save(...)
    with tf.Graph().as_default() as g:          # inference graph
        build_model(is_training=False)
        tfshrink.qat.create_eval_graph(g)
        saver.restore(...); saver.save(sess, "eval/model.ckpt")
    tfshrink.freeze("eval/model.ckpt", "model.pb", outputs="prob")
    tfshrink.qat.convert_qat("model.pb", "model_int8.tflite")

Keras 3::

    qat = tfshrink.qat.quantize_model(model)    # Sequential or Functional
    qat.compile(...); qat.fit(...)
    tfshrink.qat.convert_qat(qat, "model_int8.tflite")

or from the shell: ``tfshrink qat model.keras --data train.npz --epochs 3 -o qat.keras --tflite
qat.tflite``. TensorFlow and Keras are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tfshrink.graph.fake_quant import FakeQuantRange, fake_quant_ranges
    from tfshrink.qat.convert import QatConvertResult, convert_qat
    from tfshrink.qat.graph import QuantizeReport, create_eval_graph, create_training_graph
    from tfshrink.qat.keras import activation_ranges, quantize_model
    from tfshrink.qat.train import QatResult, qat_keras

__all__ = ["FakeQuantRange", "QatConvertResult", "QatResult", "QuantizeReport", "activation_ranges", "convert_qat",
           "create_eval_graph", "create_training_graph", "fake_quant_ranges", "qat_keras", "quantize_model"]

_LAZY = {"QatConvertResult": "qat.convert", "convert_qat": "qat.convert", "QuantizeReport": "qat.graph",
         "create_eval_graph": "qat.graph", "create_training_graph": "qat.graph", "activation_ranges": "qat.keras",
         "quantize_model": "qat.keras", "FakeQuantRange": "graph.fake_quant", "fake_quant_ranges": "graph.fake_quant",
         "QatResult": "qat.train", "qat_keras": "qat.train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfshrink.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfshrink.qat' has no attribute {name!r}")

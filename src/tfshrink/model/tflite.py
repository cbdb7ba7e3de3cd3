"""TFLite flatbuffers, run in the LiteRT interpreter (ai-edge-litert)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.errors import UserError, first_line
from tfshrink.model.base import Model, TensorSpec
from tfshrink.tflite.flatbuffer import builtin_ops, check, opcode_names, read, type_names

QUANTIZED_DTYPES = {np.dtype("int8"), np.dtype("uint8"), np.dtype("int16")}


def _interpreter_class() -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def _spec(detail: dict, name: str | None = None) -> TensorSpec:
    sig = detail.get("shape_signature")
    dims = sig if sig is not None and len(sig) else detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in dims)
    scale, zero = detail.get("quantization", (0.0, 0))
    quant = (float(scale), int(zero)) if scale else None
    return TensorSpec(name or detail["name"], np.dtype(detail["dtype"]).name, shape, quantization=quant)


def _natural(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _signature_keys(interp: Any, ins: list[dict], outs: list[dict]) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index -> signature key for the serving signature (or the only one), when it names
    every input and output. The converter names tensors `serving_default_image:0` and
    `StatefulPartitionedCall:1` and stores them in no useful order; the signature keys (`image`,
    `output_0`) are the names the source model used."""
    try:
        signatures = interp.get_signature_list()
        if not signatures:
            return {}, {}
        key = "serving_default" if "serving_default" in signatures else \
            (next(iter(signatures)) if len(signatures) == 1 else None)
        if key is None:
            return {}, {}
        runner = interp.get_signature_runner(key)
        sig_in = {int(d["index"]): n for n, d in runner.get_input_details().items()}
        sig_out = {int(d["index"]): n for n, d in runner.get_output_details().items()}
    except (ValueError, RuntimeError, KeyError):
        return {}, {}
    if set(sig_in) != {int(d["index"]) for d in ins} or set(sig_out) != {int(d["index"]) for d in outs}:
        return {}, {}
    return sig_in, sig_out


class TFLiteModel(Model):
    runtime = "litert"
    format = "tflite"

    def __init__(self, path: Path, num_threads: int | None = None, xnnpack: bool = True):
        """`num_threads` None lets LiteRT choose; `xnnpack` False loads the model without LiteRT's
        default delegate (XNNPACK), so every op runs on the builtin kernels."""
        super().__init__(path)
        try:
            self.model_bytes = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__})",
                            "check its permissions") from None
        if len(self.model_bytes) < 8 or self.model_bytes[4:8] != b"TFL3":
            raise UserError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)",
                            "the file is truncated or not a .tflite model")
        check(self.model_bytes, str(path))  # before LiteRT or any reader touches it
        self._options: dict[str, Any] = {"num_threads": num_threads}
        if not xnnpack:
            from ai_edge_litert.interpreter import OpResolverType

            self._options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = self._new_interpreter()
        except (ValueError, RuntimeError) as exc:
            first = first_line(exc)
            raise UserError(f"{path}: the LiteRT interpreter cannot load this model: {first}",
                            "the file is truncated or corrupt, or uses custom ops this runtime lacks") from None
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        self._declared = {int(d["index"]): tuple(int(x) for x in d["shape"]) for d in self._in}
        sig_in, sig_out = _signature_keys(self.interpreter, self._in, self._out)
        if sig_in:  # name and order inputs and outputs by the signature, so they pair with the source's
            self._in.sort(key=lambda d: _natural(sig_in[int(d["index"])]))
            self._out.sort(key=lambda d: _natural(sig_out[int(d["index"])]))
        self.inputs = [_spec(d, sig_in.get(int(d["index"]))) for d in self._in]
        self.outputs = [_spec(d, sig_out.get(int(d["index"]))) for d in self._out]

    def _new_interpreter(self) -> Any:
        interp = _interpreter_class()(model_content=self.model_bytes, **self._options)
        interp.allocate_tensors()
        return interp

    @property
    def input_details(self) -> list[dict]:
        """The interpreter's input details, in the order of `inputs`."""
        return self._in

    def run(self, feeds: Mapping[str, np.ndarray], *, raw: bool = False) -> dict[str, np.ndarray]:
        """Run once. Float feeds for quantized inputs are quantized, and quantized outputs are
        dequantized, unless `raw`. A batch the model can't be resized to (a batch-1 model whose
        reshapes are fixed, or XNNPACK refusing the new shape) runs one sample at a time."""
        try:
            return self._run_once(feeds, raw)
        except UserError:
            batch = self._split_batch(feeds)
            if batch is None:
                raise
        self.interpreter = self._new_interpreter()  # a failed resize can leave it unusable
        self._in = _refreshed(self._in, self.interpreter.get_input_details())
        self._out = _refreshed(self._out, self.interpreter.get_output_details())
        parts = [self._run_once({k: np.asarray(v)[i:i + 1] for k, v in feeds.items()}, raw) for i in range(batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _split_batch(self, feeds: Mapping[str, np.ndarray]) -> int | None:
        """The common batch of `feeds` when every input was declared with batch 1 and they all carry
        the same larger batch; else None."""
        batches = {np.asarray(v).shape[0] if np.ndim(v) else None for v in feeds.values()}
        declared = {shape[0] if shape else None for shape in self._declared.values()}
        if len(batches) != 1 or declared != {1}:
            return None
        (batch,) = batches
        return batch if batch is not None and batch > 1 else None

    def _run_once(self, feeds: Mapping[str, np.ndarray], raw: bool) -> dict[str, np.ndarray]:
        interp = self.interpreter
        resized = False
        arrays = []
        for detail, spec in zip(self._in, self.inputs, strict=True):
            key = spec.name if spec.name in feeds else detail["name"]  # signature key or tensor name
            if key not in feeds:
                raise UserError(f"{self.path}: input {spec.name!r} was not given",
                                f"inputs are {', '.join(s.name for s in self.inputs)}")
            value = np.asarray(feeds[key])
            target = np.dtype(detail["dtype"])
            if not raw and target in QUANTIZED_DTYPES and value.dtype != target and spec.quantization:
                scale, zero = spec.quantization
                info = np.iinfo(target)
                value = np.clip(np.round(value / scale + zero), info.min, info.max)
            value = value.astype(target, copy=False)
            arrays.append(value)
        try:
            for detail, value in zip(self._in, arrays, strict=True):
                if tuple(value.shape) != tuple(detail["shape"]):
                    interp.resize_tensor_input(detail["index"], list(value.shape))
                    resized = True
            if resized:
                interp.allocate_tensors()
                self._in = _refreshed(self._in, interp.get_input_details())
                self._out = _refreshed(self._out, interp.get_output_details())
            for detail, value in zip(self._in, arrays, strict=True):
                interp.set_tensor(detail["index"], value)
            interp.invoke()
        except (ValueError, RuntimeError) as exc:
            first = first_line(exc)
            shapes = ", ".join(f"{s.name}{list(v.shape)}" for s, v in zip(self.inputs, arrays, strict=True))
            raise UserError(f"{self.path}: running the model failed on inputs {shapes}: {first}",
                            f"the model expects {', '.join(s.name + s.shape_text() for s in self.inputs)}") from None
        out = {}
        for detail, spec in zip(self._out, self.outputs, strict=True):
            value = interp.get_tensor(detail["index"]).copy()
            if not raw and spec.quantization and value.dtype in QUANTIZED_DTYPES:
                scale, zero = spec.quantization
                value = (value.astype(np.float32) - zero) * scale
            out[spec.name] = value
        return out


def _refreshed(old: list[dict], new: list[dict]) -> list[dict]:
    """`new` details in the order of `old` (matched by tensor index)."""
    by_index = {int(d["index"]): d for d in new}
    return [by_index[int(d["index"])] for d in old]


def flatbuffer_summary(data: bytes) -> dict[str, Any]:
    """Op histogram, custom ops, tensor count, constant bytes by dtype and metadata of a .tflite,
    read straight from the flatbuffer (no tensor data is copied)."""

    model = read(data)
    codes = opcode_names(model)
    custom = {c for c in codes if c not in builtin_ops() and not c.isdigit()}  # a number: an op newer than the schema
    ops: dict[str, int] = {}
    tensors = 0
    weight_bytes: dict[str, int] = {}
    weight_params = 0
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        tensors += sub.TensorsLength()
        for i in range(sub.OperatorsLength()):
            name = codes[sub.Operators(i).OpcodeIndex()]
            ops[name] = ops.get(name, 0) + 1
        for t in range(sub.TensorsLength()):
            tensor = sub.Tensors(t)
            buf = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
            size = buf.DataLength() if buf is not None else 0
            if size == 0 and buf is not None and buf.Size():
                size = int(buf.Size())  # large models keep buffers outside the flatbuffer table
            if size:
                dtype = type_names().get(tensor.Type(), str(tensor.Type())).lower()
                weight_bytes[dtype] = weight_bytes.get(dtype, 0) + size
                n = 1
                for d in range(tensor.ShapeLength()):
                    n *= tensor.Shape(d)
                weight_params += n
    metadata = {}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        name = (md.Name() or b"").decode()
        buf = model.Buffers(md.Buffer())
        raw = bytes(buf.DataAsNumpy()) if buf.DataLength() else b""
        try:
            text = raw.decode("utf-8")
            metadata[name] = text if text.isprintable() else f"<{len(raw)} bytes>"
        except UnicodeDecodeError:
            metadata[name] = f"<{len(raw)} bytes>"
    return {"ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))), "custom_ops": sorted(custom),
            "tensors": tensors, "weight_bytes": dict(sorted(weight_bytes.items())),
            "weight_parameters": weight_params, "subgraphs": model.SubgraphsLength(), "metadata": metadata}


def io_specs(data: bytes) -> tuple[list[Any], list[Any]]:
    """(inputs, outputs) of the main subgraph as TensorSpecs, named by the serving signature's keys
    when there is one, read from the flatbuffer (so also for models LiteRT here cannot load)."""
    model = read(data)
    types = {k: v.lower() for k, v in type_names().items()}
    sub = model.Subgraphs(0)
    keys: dict[int, str] = {}
    for s in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(s)
        if sig.SubgraphIndex() != 0:
            continue
        for getter, count in ((sig.Inputs, sig.InputsLength()), (sig.Outputs, sig.OutputsLength())):
            for i in range(count):
                tm = getter(i)
                keys[int(tm.TensorIndex())] = (tm.Name() or b"").decode()
        break

    def spec(index: int) -> Any:
        t = sub.Tensors(index)
        dims = [t.ShapeSignature(d) for d in range(t.ShapeSignatureLength())] or \
            [t.Shape(d) for d in range(t.ShapeLength())]
        q = t.Quantization()
        quant = (float(q.Scale(0)), int(q.ZeroPoint(0))) if q is not None and q.ScaleLength() else None
        dtype = types.get(t.Type(), str(t.Type()))
        return TensorSpec(keys.get(index) or (t.Name() or b"").decode(), {"float32": "float32"}.get(dtype, dtype),
                          tuple(None if int(d) < 0 else int(d) for d in dims), quantization=quant)

    return ([spec(int(sub.Inputs(i))) for i in range(sub.InputsLength())],
            [spec(int(sub.Outputs(i))) for i in range(sub.OutputsLength())])


# -- the format registry's entry (tfshrink.model.FORMATS) ---------------------------------------

FORMAT = "tflite"
RUNTIME = "litert"  # every other format runs in TensorFlow
SUFFIXES = (".tflite", ".lite")


def detect(path: Path) -> Path | None:
    """`path` when it is a file named like a TFLite model, else None."""
    return path if path.is_file() and path.suffix.lower() in SUFFIXES else None


def sniff(head: bytes) -> bool:
    """The TFLite file identifier, by its first bytes (for a file named otherwise)."""
    return head[4:8] == b"TFL3"


def open_model(path: Path, **_: Any) -> TFLiteModel:
    return TFLiteModel(path)

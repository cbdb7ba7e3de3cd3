"""The conversion modes (`--quantize`), the I/O types each allows, and why tfshrink defaults as it
does. Imports nothing, so the CLI can list the modes without loading the converter."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """One `--quantize` mode, as TFLiteConverter makes it: `optimize` sets Optimize.DEFAULT,
    `types` the converter's supported_types (dtype names), `ops` the OpsSet names its kernels come
    from (none: TFLITE_BUILTINS), `calibrated` that it needs representative data (or FakeQuant
    ranges) and takes `io_types` for its inputs and outputs. A mode whose model is chosen rather
    than converted (auto) has `converted` False."""

    optimize: bool = True
    types: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    calibrated: bool = False
    io_types: tuple[str, ...] = ()
    converted: bool = True


# The registry: adding a mode that TFLiteConverter can make is one entry here (and its NOTES line).
REGISTRY = {
    "none": Mode(optimize=False),
    "float16": Mode(types=("float16",)),
    "dynamic": Mode(),
    "int8": Mode(ops=("TFLITE_BUILTINS_INT8",), calibrated=True, io_types=("float32", "int8", "uint8")),
    "int16x8": Mode(ops=("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",), calibrated=True,
                    io_types=("float32", "int16")),
    "auto": Mode(converted=False),
}
MODES = tuple(REGISTRY)
IO_TYPES = {name: m.io_types for name, m in REGISTRY.items() if m.io_types}
CALIBRATED = tuple(name for name, m in REGISTRY.items() if m.calibrated)  # need calibration data (or FakeQuant ranges)
TARGETS = ("cpu", "int8-only")  # what int8 is made for (tfshrink.conversion.rules)
TARGET_HELP = {
    "cpu": "LiteRT on CPU with XNNPACK (default): int8 with a float output softmax, a float small first conv "
           "and float ops XNNPACK has no int8 kernel for, so that it runs in one XNNPACK partition",
    "int8-only": "integer-only hardware (Edge TPU, NPU, microcontroller): every op int8 where an int8 kernel "
                 "exists; float only at float32 I/O edges",
}

# What tfshrink chose and why, from LiteRT 2.3 measurements on an AVX2 x86 CPU (MobileNetV2 224
# with random weights, and the digits CNN of the tests).
NOTES = {
    "io": ("inputs and outputs stay float32: the QUANTIZE/DEQUANTIZE ops at the edges run inside "
           "LiteRT's XNNPACK delegate and measured the same latency as int8 I/O (MobileNetV2, 1 thread: "
           "10.6 vs 10.6 ms); pass --input-type/--output-type int8 or uint8 for integer-only hardware"),
    "int8": "every op restricted to LiteRT's int8 builtins (TFLITE_BUILTINS_INT8), weights per channel",
    "dynamic": ("dynamic-range ops (int8 weights, float activations) are not taken by XNNPACK everywhere: "
                "MobileNetV2 splits into 16 XNNPACK partitions with LiteRT's hybrid kernels between them and "
                "measured 1.4x (1 thread) to 1.8x (2 threads) slower than float; --quantize int8 with calibration "
                "is about as small and faster there (a tiny model XNNPACK takes whole can be fastest dynamic)"),
    "int16x8": ("int16x8 runs on LiteRT's reference kernels (XNNPACK takes no int16 activations): on CPU it "
                "measured ~13x slower than int8 on a small CNN; use it where int8 accuracy is not enough"),
    "float16": ("float16 weights are expanded to float32 when LiteRT loads the model on CPU: half the file, "
                "float speed"),
    "auto": ("--quantize auto converts int8, int8 with a few float layers (only when int8 misses the target), "
             "dynamic-range and float16, scores each on held-out data against the source, and keeps the one that "
             "meets --min-cosine/--max-top1-drop with the fewest XNNPACK partitions, then the fewest bytes "
             "(rules, not timing; tfshrink.conversion.auto)"),
}

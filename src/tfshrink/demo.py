"""`tfshrink demo`: MTCNN's ONet, real weights, real photos: TF1 checkpoint -> freeze -> inspect ->
transform -> int8 TFLite -> verify -> bench -> report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tfshrink.benchmarking import bench
from tfshrink.conversion import convert
from tfshrink.freezer import freeze
from tfshrink.inspection import human_count, inspect
from tfshrink.model import load
from tfshrink.reporting.html import report
from tfshrink.transformer import transform
from tfshrink.verification import verify
from tfshrink.zoo import mtcnn


def run_demo(out_dir: str | Path, console: Any) -> int:
    """Build ONet as a TF1 checkpoint, freeze it with detected outputs, inspect and verify it on
    a real face and real non-face crops. Returns the exit code."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    console.print("[bold]1. checkpoint[/]  MTCNN ONet with the mtcnn package's weights, as a TF1 graph")
    prefix = mtcnn.save_onet_checkpoint(out / "onet_ckpt")
    console.print(f"   wrote {prefix}.meta/.index/.data")

    face = mtcnn.face_crop()
    crops = np.concatenate([face[None], mtcnn.non_face_crops()])
    feeds = out / "crops.npz"
    np.savez(feeds, **{"onet/input": mtcnn.normalize(crops)})

    console.print("[bold]2. freeze[/]      no --outputs: tfshrink finds them")
    frozen = out / "onet.pb"
    result = freeze(prefix.parent, frozen, inputs=feeds)
    console.print(f"   {frozen}: {result.nodes} nodes, {result.bytes:,} bytes; outputs {', '.join(result.outputs)}")

    console.print("[bold]3. inspect[/]")
    info = inspect(frozen)
    for spec in info.inputs:
        console.print(f"   input  {spec.name} {spec.dtype} {spec.shape_text()}")
    for spec in info.outputs:
        console.print(f"   output {spec.name} {spec.dtype} {spec.shape_text()} ({spec.op})")
    console.print(f"   {info.const_parameters} parameters ({human_count(info.const_parameters)}), {info.nodes} nodes")

    console.print("[bold]4. verify[/]      checkpoint vs frozen graph on a real face and 4 non-face photos")
    check = verify(prefix.parent, frozen, inputs=feeds, atol=1e-5, rtol=1e-4)
    for o in check.outputs:
        console.print(f"   {o.name_a}: max abs error {o.max_abs:.3g}, cosine {o.cosine:.6f}")
    with load(frozen) as model:
        prob = model.run({"onet/input": mtcnn.normalize(crops)})["onet/prob1"][:, 1]
    console.print(f"   face probability: astronaut's face {prob[0]:.3f}; non-faces "
                  + ", ".join(f"{p:.3f}" for p in prob[1:]))
    ok = check.passed and prob[0] > 0.9 and bool(np.all(prob[1:] < 0.5))

    console.print("[bold]5. transform[/]   the transform_graph command from the MTCNN blogs")
    small = out / "onet_quantized.pb"
    shrunk = transform(frozen, small, DEMO_TRANSFORMS, inputs="onet/input", outputs=",".join(mtcnn.ONET_OUTPUTS))
    console.print(f"   {small}: {shrunk.nodes_before} -> {shrunk.nodes_after} nodes, "
                  f"{shrunk.bytes_before:,} -> {shrunk.bytes_after:,} bytes "
                  f"({shrunk.bytes_after / shrunk.bytes_before:.0%}); 8-bit weights change outputs by "
                  f"{shrunk.max_abs_error:.3g} at most on random inputs")

    console.print("[bold]6. convert[/]     full int8 TFLite, calibrated on a folder of real photo crops")
    photos = out / "calibration"
    count = write_calibration_photos(photos)
    tflite = out / "onet_int8.tflite"
    converted = convert(frozen, tflite, quantize="int8", calibration=photos,
                        preprocess="size=48x48,mean=127.5,std=128,color=rgb", keep_float=["none"], verify=False)
    float_ops = converted.precision.float_ops if converted.precision is not None else {}
    console.print(f"   {tflite}: {converted.bytes:,} bytes from {count} photos; "
                  + ("every op int8" if not float_ops else
                     "still float: " + ", ".join(f"{n} {op}" for op, n in sorted(float_ops.items()))))

    console.print("[bold]7. verify[/]      int8 TFLite vs frozen graph on the face and non-face crops")
    check8 = verify(frozen, tflite, inputs=feeds, atol=0.05, rtol=0.0)
    with load(tflite) as model:
        prob8 = model.run({"onet/input": mtcnn.normalize(crops)})["onet/prob1"][:, 1]
    drift = float(np.max(np.abs(prob8 - prob)))
    console.print(f"   face probability int8: {prob8[0]:.3f} (float {prob[0]:.3f}); non-faces "
                  + ", ".join(f"{p:.3f}" for p in prob8[1:]) + f"; largest change {drift:.3f}")
    ok = ok and drift <= 0.03 and prob8[0] > 0.9 and bool(np.all(prob8[1:] < 0.5))

    console.print("[bold]8. bench[/]")
    rows = []
    for path in (frozen, small, tflite):
        r = bench(path, runs=50, warmup=5)
        rows.append((path, r))
        console.print(f"   {path.name:<22} {r.model_bytes:>10,} bytes  p50 {r.latency_ms['p50']:.2f} ms "
                      f"({r.runtime})")
    console.print("[bold]9. report[/]")
    report_path = _report(out, [frozen, small, tflite], feeds)
    mark = "[green]ok[/]" if ok and check8.outputs else "[red]FAILED[/]"
    console.print(f"   open {report_path}")
    console.print(f"{mark} in {time.perf_counter() - start:.1f} s; files in {out}/")
    return 0 if ok else 1


DEMO_TRANSFORMS = ("remove_nodes(op=identity, op=checknumerics) fold_constants(ignore_errors=true) fold_batch_norms "
                   "fold_old_batch_norms quantize_weights strip_unused_nodes merge_duplicate_nodes "
                   "sort_by_execution_order")


def write_calibration_photos(folder: Path) -> int:
    """Real photo crops for calibration, none of them the crops the demo verifies on: the LFW faces
    scikit-image ships (grayscale, made RGB) and patches of its other photos."""
    import skimage.data
    from PIL import Image
    from skimage.color import gray2rgb
    from skimage.transform import resize

    folder.mkdir(parents=True, exist_ok=True)
    faces = skimage.data.lfw_subset()[:40]  # 25x25 grayscale faces in [0, 1]
    images = [(gray2rgb(f) * 255).round().astype(np.uint8) for f in faces]
    for photo in (skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(), skimage.data.hubble_deep_field()):
        h, w = photo.shape[:2]
        for i in range(5):
            top, left = (h // 7) * i, (w // 9) * (i + 1)
            images.append((resize(photo[top:top + h // 3, left:left + h // 3], (48, 48)) * 255).round().astype(np.uint8))
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"photo_{i:03d}.png")
    return len(images)


def _report(out: Path, models: list[Path], feeds: Path) -> Path:
    """One self-contained HTML page: each stage's summary, size and latency charts, agreement."""

    path = out / "report.html"
    report(models, path, names=["frozen .pb", "quantize_weights .pb", "int8 .tflite"], inputs=feeds,
           title="tfshrink demo: MTCNN ONet", runs=30)
    return path

"""`tfshrink demo`: MTCNN's ONet, real weights, real photos, from TF1 checkpoint to a verified .pb."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def run_demo(out_dir: str | Path, console: Any) -> int:
    """Build ONet as a TF1 checkpoint, freeze it with detected outputs, inspect and verify it on
    a real face and real non-face crops. Returns the exit code."""
    from tfshrink.freezer import freeze
    from tfshrink.inspection import human_count, inspect
    from tfshrink.model import load
    from tfshrink.verification import verify
    from tfshrink.zoo import mtcnn

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
    mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
    console.print(f"{mark} in {time.perf_counter() - start:.1f} s; files in {out}/")
    return 0 if ok else 1

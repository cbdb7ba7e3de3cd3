"""int8 by rules for a target, never by timings taken while converting (issue 15): --target cpu and
int8-only, the target stored in the model, XNNPACK partitions counted, and timing moved to
tune(), whose plan file convert applies with the same bytes every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import tfshrink
from tests import builders
from tfshrink.conversion.delegation import split, xnnpack_delegation
from tfshrink.errors import UserError


@pytest.fixture
def no_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way tfshrink times a model raises: a convert that passes timed nothing."""
    import tfshrink.benchmarking
    import tfshrink.benchmarking.runners
    import tfshrink.conversion.tuning

    def timed(*args: object, **kwargs: object) -> None:
        raise AssertionError("convert timed a model")

    for module, name in ((tfshrink.benchmarking, "measure"), (tfshrink.benchmarking, "bench"),
                         (tfshrink.benchmarking, "bench_runner"), (tfshrink.benchmarking, "open_runner"),
                         (tfshrink.benchmarking.runners, "open_runner"),
                         (tfshrink.conversion.tuning, "measure"), (tfshrink.conversion.tuning, "open_runner"),
                         (tfshrink.conversion.tuning, "interleaved_latency")):
        monkeypatch.setattr(module, name, timed)
    # and wherever a conversion module imported a timing function by name (tuning aside)
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("tfshrink.conversion.") and module_name != "tfshrink.conversion.tuning":
            for name in ("bench", "measure", "bench_runner", "open_runner", "interleaved_latency"):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, timed)


@contextmanager
def busy_cores() -> Iterator[int]:
    """One busy-looping process per core while the block runs."""
    count = os.cpu_count() or 2
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _convert(digits: builders.Digits, out: Path, **kw: object) -> tfshrink.conversion.ConvertResult:
    return tfshrink.convert(digits.keras, out, quantize="int8", calibration=digits.calibration_npz, verify=False,
                            **kw)


def test_convert_times_nothing_without_a_plan(no_timing: None, digits: builders.Digits, tmp_path: Path) -> None:
    """The int8 default (and every other mode) never runs benchmarking code: its choices are rules."""
    r = _convert(digits, tmp_path / "default.tflite")
    assert r.kept_float["default"][0] == "probs" and r.partitions == 1
    for mode in ("none", "dynamic", "float16"):
        tfshrink.convert(digits.keras, tmp_path / f"{mode}.tflite", quantize=mode, verify=False)
    r = _convert(digits, tmp_path / "only.tflite", target="int8-only")
    assert r.precision.float_ops == {}


def test_keep_float_auto_and_quantize_auto_time_nothing(no_timing: None, digits: builders.Digits,
                                                        tmp_path: Path) -> None:
    """--keep-float auto (which timed its choice for its notes) and --quantize auto count XNNPACK
    partitions and score accuracy; neither times a model."""
    broken = builders.broken_int8_pb(digits, tmp_path / "broken.pb")
    r = tfshrink.convert(broken, tmp_path / "kept.tflite", quantize="int8", calibration=digits.calibration_npz,
                         keep_float=["auto"], min_cosine=0.999, max_size_ratio=4)
    assert r.auto_keep is not None and r.auto_keep.reached and [k.layer for k in r.auto_keep.kept] == ["fc"]
    assert r.auto_keep.partitions == r.auto_keep.int8_partitions == 1
    r = tfshrink.convert(broken, tmp_path / "auto.tflite", quantize="auto", calibration=digits.calibration_npz,
                         max_top1_drop=1)
    assert r.auto is not None and r.auto.chosen.meets and r.quantize in ("dynamic", "float16", "int8")


def test_converting_twice_gives_the_same_bytes_with_every_core_busy(digits: builders.Digits,
                                                                     tmp_path: Path) -> None:
    """The second conversion runs in a fresh process while a busy loop loads every core: the same
    bytes (no choice depends on the machine's load)."""
    first, second = tmp_path / "a.tflite", tmp_path / "b.tflite"
    _convert(digits, first)
    with busy_cores() as count:
        assert count >= 1
        subprocess.run([sys.executable, "-c", "import sys, tfshrink; tfshrink.convert(sys.argv[1], sys.argv[2], "
                        "quantize='int8', calibration=sys.argv[3], verify=False)",
                        str(digits.keras), str(second), str(digits.calibration_npz)], check=True, capture_output=True)
    assert first.read_bytes() == second.read_bytes()


def test_int8_only_target_is_all_int8_and_recorded(digits: builders.Digits, tmp_path: Path) -> None:
    out = tmp_path / "only.tflite"
    r = _convert(digits, out, target="int8-only")
    assert r.target == "int8-only" and r.defaults["target"] == "int8-only" and r.kept_float == {}
    assert r.precision.float_ops == {} and r.precision.edge_conversions == {"QUANTIZE": 1, "DEQUANTIZE": 1}
    assert r.defaults["ops"] == "TFLITE_BUILTINS_INT8"
    assert any(n.startswith("target int8-only: every op int8") for n in r.notes)
    # XNNPACK has no int8 SOFTMAX: it runs outside, between the convs and the output's DEQUANTIZE
    assert r.partitions == 2 and [op for op, _ in r.delegation.outside] == ["SOFTMAX"]
    strict = _convert(digits, tmp_path / "strict.tflite", keep_float=["none"])
    assert strict.target == "cpu"
    from tfshrink.tflite.metadata import read_target

    assert read_target(out.read_bytes()) == {"target": "int8-only", "quantize": "int8", "rules": 1,
                                             "plan_sha256": None}
    info = tfshrink.inspect(out)
    assert info.extra["target"]["target"] == "int8-only" and info.to_json()["target"]["quantize"] == "int8"
    default = _convert(digits, tmp_path / "cpu.tflite")
    assert tfshrink.inspect(tmp_path / "cpu.tflite").extra["target"]["target"] == "cpu"
    assert default.bytes != r.bytes


def test_target_errors(digits: builders.Digits, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--target gpu is not one of cpu, int8-only"):
        _convert(digits, tmp_path / "x.tflite", target="gpu")
    with pytest.raises(UserError, match="--target int8-only is for --quantize int8, not dynamic"):
        tfshrink.convert(digits.keras, tmp_path / "x.tflite", quantize="dynamic", target="int8-only")
    with pytest.raises(UserError, match="--keep-float cannot keep layers in float"):
        _convert(digits, tmp_path / "x.tflite", target="int8-only", keep_float=["conv1"])
    assert not (tmp_path / "x.tflite").exists()


def test_split_reads_partitions_and_the_ops_left_outside() -> None:
    """DELEGATE nodes are the partitions; a node is inside one when a walk back from the
    partition's outputs reaches it before the partition's inputs."""
    details = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 10], "outputs": [1]},
        {"index": 1, "op_name": "PRELU", "inputs": [1, 11], "outputs": [2]},
        {"index": 2, "op_name": "CONV_2D", "inputs": [2, 12], "outputs": [3]},
        {"index": 3, "op_name": "SOFTMAX", "inputs": [3], "outputs": [4]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [0], "outputs": [1]},
        {"index": 5, "op_name": "DELEGATE", "inputs": [2], "outputs": [3]},
    ]
    got = split(details, {2: "prelu", 4: "probs"})
    assert got.partitions == 2 and got.outside == (("PRELU", "prelu"), ("SOFTMAX", "probs")) and got.nodes == 4
    assert not got.whole and got.outside_ops() == {"PRELU": 1, "SOFTMAX": 1}
    assert got.describe() == "2 XNNPACK partition(s); outside the delegate: PRELU x1, SOFTMAX x1"
    assert xnnpack_delegation(b"not a model").partitions is None


def test_tune_writes_a_plan_that_convert_applies_with_the_same_bytes(digits: builders.Digits, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """tune() measures the rules' choices on this machine and writes them, with the measurements
    and the machine, to a JSON plan; convert(plan=...) applies it without timing anything."""
    from tfshrink.conversion import tune

    plan = tmp_path / "plan.json"
    t = tune(digits.keras, plan, calibration=digits.calibration_npz, rounds=1, runs=3)
    doc = json.loads(plan.read_text())
    assert doc["format"] == "tfshrink-plan" and doc["version"] == 1 and doc["target"] == "cpu"
    assert doc["rules"]["float"][0] == "probs" and "conv1" in doc["rules"]["float"][1]
    assert doc["choices"] == {"float": list(t.float_tensors), "dynamic_range": list(t.dynamic_range)}
    steps = [m["step"] for m in doc["measurements"]]
    assert steps[0] == "first_conv" and all(m["candidate_p50_ms"] > 0 for m in doc["measurements"])
    assert doc["machine"]["cpus"] >= 1 and doc["machine"]["litert"] and doc["timing"]["threads"] == 1
    assert t.partitions is not None and t.to_json()["choices"] == doc["choices"]
    import tfshrink.benchmarking

    def timed(*args: object, **kwargs: object) -> None:
        raise AssertionError("convert --plan timed a model")

    monkeypatch.setattr(tfshrink.benchmarking, "measure", timed)
    monkeypatch.setattr(tfshrink.conversion.tuning, "measure", timed)
    a = _convert(digits, tmp_path / "a.tflite", plan=plan)
    b = _convert(digits, tmp_path / "b.tflite", plan=plan)
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    import hashlib

    sha = hashlib.sha256(plan.read_bytes()).hexdigest()
    assert a.plan == b.plan == sha and a.defaults["plan"]["sha256"] == sha
    assert tfshrink.inspect(tmp_path / "a.tflite").extra["target"]["plan_sha256"] == sha
    assert any(n.startswith(f"plan {plan} (sha256 {sha[:12]}") for n in a.notes)


def test_a_plan_is_applied_as_written(digits: builders.Digits, tmp_path: Path) -> None:
    """A plan's choices, whatever they are: here conv1 back in int8 and conv2 in dynamic-range
    form (int8 weights, float activations, with conv1 and the pool before it float)."""
    from tfshrink.conversion.rules import fingerprint
    from tfshrink.tflite.metadata import tensor_names

    rules = _convert(digits, tmp_path / "rules.tflite")
    names = [t for _, t in tensor_names((tmp_path / "rules.tflite").read_bytes())]
    conv1, pool, conv2 = (next(t for t in names if key in t) for key in ("conv1", "pool", "conv2"))
    plan = tmp_path / "plan.json"
    doc = {"format": "tfshrink-plan", "version": 1, "target": "cpu", "model": {"fingerprint": "?"},
           "choices": {"float": ["probs", conv1, pool], "dynamic_range": [conv2]}}
    plan.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="was made for another model"):
        _convert(digits, tmp_path / "x.tflite", plan=plan)
    doc["model"]["fingerprint"] = _fingerprint(digits, tmp_path, fingerprint)
    plan.write_text(json.dumps(doc))
    r = _convert(digits, tmp_path / "planned.tflite", plan=plan)
    assert r.precision.dynamic_range_ops == {"CONV_2D": 1}
    assert r.precision.float_ops == {"CONV_2D": 2, "MAX_POOL_2D": 1, "SOFTMAX": 1}
    assert r.defaults["plan"]["dynamic_range"] == [conv2] and r.kept_float["default"][:3] == ["probs", conv1, pool]
    assert r.bytes != rules.bytes
    for bad, message in (({"quantize": "dynamic"}, "--plan chooses int8 layers"),
                         ({"keep_float": ["conv1"]}, "--plan and --keep-float both choose"),
                         ({"target": "int8-only"}, "was tuned for --target cpu, not int8-only")):
        kw = {"quantize": "int8", "calibration": digits.calibration_npz, "plan": plan, **bad}
        with pytest.raises(UserError, match=message):
            tfshrink.convert(digits.keras, tmp_path / "x.tflite", **kw)
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(UserError, match="not a tfshrink plan"):
        _convert(digits, tmp_path / "x.tflite", plan=tmp_path / "junk.json")
    with pytest.raises(UserError, match="nothing to tune"):
        tfshrink.conversion.tune(digits.keras, tmp_path / "p.json", calibration=digits.calibration_npz,
                                 target="int8-only")


def _fingerprint(digits: builders.Digits, tmp_path: Path, fingerprint: object) -> str:
    """The fingerprint of the digits CNN's calibrated model, as tune writes it (the tuner swapped
    for one that only records it: nothing is timed)."""
    from tfshrink.conversion.rules import TUNER

    seen: list[str] = []

    def record(calibrated: bytes, options: object, where: str, choice: object) -> object:
        seen.append(fingerprint(calibrated))  # type: ignore[operator]
        return choice

    token = TUNER.set(record)  # type: ignore[arg-type]
    try:
        _convert(digits, tmp_path / "fp.tflite")
    finally:
        TUNER.reset(token)
    return seen[0]


def test_prelu_stays_float_so_xnnpack_takes_the_whole_model(no_timing: None, tmp_path: Path) -> None:
    """Rule 3 on a small PReLU CNN: int8 PRELU has no XNNPACK kernel (the all-int8 model splits),
    so the default keeps PRELU float between int8 convs and the model runs in one partition.
    Partitions are counted by loading the model, not timed (no_timing)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    inputs = tf.keras.Input((12, 12, 3), name="image")
    x = tf.keras.layers.Conv2D(8, 3, name="conv1")(inputs)
    x = tf.keras.layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = tf.keras.layers.Conv2D(16, 3, name="conv2")(x)
    x = tf.keras.layers.PReLU(shared_axes=[1, 2], name="prelu2")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(4, activation="softmax", name="probs")(x)
    model = tf.keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.PReLU):
            layer.set_weights([rng.uniform(-0.4, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()])
    path = tmp_path / "prelu.keras"
    model.save(path)
    npz = tmp_path / "cal.npz"
    np.savez(npz, image=rng.normal(size=(16, 12, 12, 3)).astype(np.float32))
    only = tfshrink.convert(path, tmp_path / "only.tflite", quantize="int8", calibration=npz, verify=False,
                            target="int8-only")
    assert only.delegation.outside_ops().get("PRELU") == 2 and only.partitions >= 2
    assert any("expected to be faster" in n for n in only.notes)
    r = tfshrink.convert(path, tmp_path / "cpu.tflite", quantize="int8", calibration=npz)
    assert r.partitions == 1 and r.delegation.outside == ()
    assert [x["op"] for x in r.defaults["xnnpack_float_ops"]] == ["PRELU", "PRELU"]
    assert r.precision.float_ops == {"PRELU": 2, "CONV_2D": 1, "SOFTMAX": 1}
    assert r.ops["CONV_2D"] == 2 and r.precision.inner_conversions > 0
    assert not any("expected to be faster" in n for n in r.notes)
    assert r.verification.outputs[0].cosine > 0.99


def test_cli_tune_then_convert_with_the_plan_and_inspect_shows_the_target(digits: builders.Digits, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from tfshrink.cli import main

    def cli(*argv: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        text = capsys.readouterr()
        assert exc.value.code == 0, text.err
        return text.out

    plan = tmp_path / "plan.json"
    out = cli("tune", digits.keras, "-o", plan, "--calibration", digits.calibration_npz, "--rounds", "1",
              "--runs", "3")
    assert f"plan {plan}" in out and "measured:" in out
    made = [tmp_path / f"planned{i}.tflite" for i in (1, 2)]
    for path in made:
        text = cli("convert", digits.keras, "-o", path, "--quantize", "int8", "--calibration",
                   digits.calibration_npz, "--plan", plan, "--no-verify")
        assert "target: cpu (plan " in text and "XNNPACK partition" in text
    assert made[0].read_bytes() == made[1].read_bytes()
    assert "made for: cpu (int8, plan " in cli("inspect", made[0])
    only = json.loads(cli("convert", digits.keras, "-o", tmp_path / "only.tflite", "--quantize", "int8",
                          "--calibration", digits.calibration_npz, "--target", "int8-only", "--no-verify", "--json"))
    assert only["target"] == "int8-only" and only["xnnpack"]["partitions"] >= 1

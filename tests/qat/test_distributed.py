"""Acceptance (issue 17): Keras QAT on scikit-learn's digits under MultiWorkerMirroredStrategy with
2 worker processes on localhost (free ports, a TF_CONFIG per process) reaches within 0.5 points
of single-process QAT accuracy; only the chief writes the .keras and .tflite. The same workers
then train on the digits as sharded TFRecords (sharded by file). Plus, in this process:
MirroredStrategy, resuming from BackupAndRestore's backup after an interruption (with and without
a strategy), and QAT on TFRecords without a strategy.

The single-process reference is `qat_keras` as it always ran (Keras's fit, which shuffles in its
own way); the distributed runs shuffle with tf.data, so the two see the batches in different
orders, worth a sample or so of the 360 (0.28 points each). A single process under the same
distributed loop (MirroredStrategy, one replica) sees the same batches as the two workers and
reaches the same accuracy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.qat.digits import KerasDigits, keras_digits
from tfshrink import _tf
from tfshrink.errors import UserError
from tfshrink.qat.train import qat_keras

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3
LR = 1e-4
SPEC = "pixels=x:float32:8,8,1; digit=y:int64"
WORKER = """
import json, sys
from tfshrink.qat.distributed import make_strategy
from tfshrink.qat.train import qat_keras
args = json.loads(sys.argv[1])
strategy = make_strategy("multi-worker")  # reads TF_CONFIG, before anything else runs in TensorFlow
results = {}
for name, data, val, spec in (("npz", args["train"], args["val"], None),
                              ("tfrecord", args["train_tfrecord"], args["val_tfrecord"], args["spec"])):
    r = qat_keras(args["model"], data, args["out"] + f"/{name}.keras", epochs=args["epochs"], val=val,
                  learning_rate=args["lr"], tflite=args["out"] + f"/{name}.tflite", data_spec=spec, strategy=strategy)
    results[name] = {"qat": r.qat_metric, "int8": r.int8_metric, "losses": r.history, "notes": r.notes,
                     "train_samples": r.train_samples}
print("RESULT " + json.dumps(results), flush=True)
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _write_tfrecords(path: Path, x: np.ndarray, y: np.ndarray, files: int) -> str:
    """The digits as `files` TFRecord files (float_list pixels, int64 digit), round-robin."""
    tf = _tf.tf()
    writers = [tf.io.TFRecordWriter(str(path.parent / f"{path.name}-{k}.tfrecord")) for k in range(files)]
    for i in range(len(x)):
        feature = {"pixels": tf.train.Feature(float_list=tf.train.FloatList(value=x[i].ravel())),
                   "digit": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])]))}
        writers[i % files].write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    for writer in writers:
        writer.close()
    return f"{path.parent}/{path.name}-*.tfrecord"


@pytest.fixture(scope="module")
def kd(tmp_path_factory: pytest.TempPathFactory) -> KerasDigits:
    return keras_digits(tmp_path_factory.mktemp("qat_distributed_digits"))


@pytest.fixture(scope="module")
def records(kd: KerasDigits) -> dict[str, str]:
    train, val = np.load(kd.train_npz), np.load(kd.val_npz)
    return {"train": _write_tfrecords(kd.keras.parent / "train", train["x"], train["y"], 4),
            "val": _write_tfrecords(kd.keras.parent / "val", val["x"], val["y"], 1)}


@pytest.fixture(scope="module")
def single(kd: KerasDigits, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("qat_single")
    return qat_keras(kd.keras, kd.train_npz, out / "single.keras", epochs=EPOCHS, val=kd.val_npz, learning_rate=LR,
                     tflite=out / "single.tflite")


@pytest.fixture(scope="module")
def workers(kd: KerasDigits, records: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two worker processes on localhost, each with its TF_CONFIG, running the same command (the
    same output paths): {"results": per worker, "out": the folder, "seconds": wall time}."""
    out = tmp_path_factory.mktemp("qat_multi_worker")
    args = json.dumps({"model": str(kd.keras), "train": str(kd.train_npz), "val": str(kd.val_npz),
                       "train_tfrecord": records["train"], "val_tfrecord": records["val"], "spec": SPEC,
                       "out": str(out), "epochs": EPOCHS, "lr": LR})
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.monotonic()
    children = [subprocess.Popen([sys.executable, "-c", WORKER, args], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env={**env, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                      "task": {"type": "worker", "index": i}})})
                for i in range(2)]
    outputs = []
    try:
        for child in children:
            outputs.append(child.communicate(timeout=400))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    seconds = time.monotonic() - start
    results = []
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr[-4000:]
        line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    return {"results": results, "out": out, "seconds": seconds}


@pytest.mark.slow  # the two workers take ~35 s to start and train twice
def test_two_workers_reach_single_process_accuracy(single: Any, workers: dict[str, Any]) -> None:
    chief, other = (r["npz"] for r in workers["results"])
    print(f"\ndigits QAT, {EPOCHS} epochs at lr {LR:g}: single process {single.qat_metric:.2f}% "
          f"(int8 {single.int8_metric:.2f}%); 2 workers {chief['qat']:.2f}% (int8 {chief['int8']:.2f}%); "
          f"{workers['seconds']:.0f} s for both workers' two trainings")
    assert abs(chief["qat"] - single.qat_metric) <= 0.5
    assert abs(chief["int8"] - single.int8_metric) <= 0.5
    assert chief["losses"] == other["losses"] and chief["qat"] == other["qat"]  # one model, kept in step
    assert "MultiWorkerMirroredStrategy: 2 replica(s) on 2 worker(s)" in chief["notes"][0]
    assert "(the chief: it writes the files)" in chief["notes"][0] and "worker 1" in other["notes"][0]
    assert other["int8"] is None  # worker 1 wrote nothing
    out = workers["out"]
    assert (out / "npz.keras").is_file() and (out / "npz.tflite").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["npz.keras", "npz.tflite", "tfrecord.keras", "tfrecord.tflite"]


@pytest.mark.slow
def test_the_ranges_cover_the_global_batch(workers: dict[str, Any]) -> None:
    """Each range is updated once per global batch (45 of 32 per epoch), as in one process."""
    keras = _tf.tf().keras
    model = keras.models.load_model(workers["out"] / "npz.keras")
    counts = {w.path: float(np.asarray(w)) for w in model.weights if w.path.endswith("_count")}
    assert counts and set(counts.values()) == {EPOCHS * 45.0}


@pytest.mark.slow
def test_tfrecords_are_sharded_by_file_among_the_workers(workers: dict[str, Any], single: Any) -> None:
    chief, other = (r["tfrecord"] for r in workers["results"])
    assert "4 TFRecord file(s), sharded by file among 2 workers" in chief["notes"]
    assert chief["losses"] == other["losses"] and chief["train_samples"] == 1437
    assert abs(chief["qat"] - single.qat_metric) <= 1.0  # other batches again (per-file shards, a shuffle buffer)


@pytest.mark.slow
def test_one_process_under_the_distributed_loop_matches_the_workers(kd: KerasDigits, workers: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    mirrored = qat_keras(kd.keras, kd.train_npz, tmp_path / "mirrored.keras", epochs=EPOCHS, val=kd.val_npz,
                         learning_rate=LR, strategy="mirrored")
    chief = workers["results"][0]["npz"]
    print(f"\none process, MirroredStrategy: {mirrored.qat_metric:.2f}%, loss per epoch {mirrored.history}; "
          f"2 workers: {chief['qat']:.2f}%, {chief['losses']}")
    assert "MirroredStrategy: 1 replica(s) on 1 worker(s)" in mirrored.notes[0]
    assert abs(mirrored.qat_metric - chief["qat"]) <= 0.5  # the same batches, up to the reduction order
    np.testing.assert_allclose(mirrored.history, chief["losses"], rtol=0.05)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("strategy", [None, "mirrored"])
def test_training_resumes_from_the_backup(kd: KerasDigits, tmp_path: Path, strategy: str | None) -> None:
    backup = tmp_path / "backup"
    per_epoch = 1437

    def stop_in_epoch_two(done: int, total: int) -> None:
        if done > per_epoch + 100:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        qat_keras(kd.keras, kd.train_npz, tmp_path / "qat.keras", epochs=EPOCHS, learning_rate=LR, strategy=strategy,
                  backup_dir=backup, progress=stop_in_epoch_two)
    assert (backup / "training_metadata.json").is_file()
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    seen: list[int] = []
    resumed = qat_keras(kd.keras, kd.train_npz, tmp_path / "qat.keras", epochs=EPOCHS, learning_rate=LR,
                        strategy=strategy, backup_dir=backup, progress=lambda done, total: seen.append(done))
    assert len(resumed.history) == EPOCHS - 1  # epoch 1 came from the backup
    assert any("resumed from the training state backed up" in n for n in resumed.notes)
    assert any("epochs 2..3 ran here" in n for n in resumed.notes)
    assert not backup.exists()  # removed once training finished
    assert (tmp_path / "qat.keras").is_file()


def test_qat_on_tfrecords_in_one_process(kd: KerasDigits, records: dict[str, str], tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    r = qat_keras(kd.keras, records["train"], tmp_path / "qat.keras", epochs=2, val=records["val"],
                  learning_rate=LR, data_spec=SPEC, progress=lambda done, total: seen.append((done, total)))
    assert r.train_samples == 1437 and r.val_samples == 360 and r.loss == "sparse_categorical_crossentropy"
    assert seen[-1] == (2 * 1437, 2 * 1437) and seen[0] == (32, 2 * 1437)  # samples processed
    assert r.qat_metric > 95.0 and r.float_metric == pytest.approx(r.float_metric)


def test_strategy_mistakes_are_user_errors(kd: KerasDigits, records: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--strategy 'tpu' is not one of mirrored, multi-worker"):
        qat_keras(kd.keras, kd.train_npz, tmp_path / "q.keras", epochs=1, strategy="tpu")
    with pytest.raises(UserError, match="needs x .inputs. and y .labels."):
        qat_keras(kd.keras, records["train"], tmp_path / "q.keras", epochs=1, data_spec="pixels:float32:8,8,1")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="a file is in the way"):
        qat_keras(kd.keras, kd.train_npz, tmp_path / "q.keras", epochs=1, backup_dir=tmp_path / "file")

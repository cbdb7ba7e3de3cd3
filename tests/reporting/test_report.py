"""`tfshrink report`: one self-contained HTML file: stages, charts, agreement and quantization error."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.builders import chromium
from tfshrink.cli import main
from tfshrink.errors import UserError
from tfshrink.reporting.charts import Bar, bar_chart
from tfshrink.reporting.html import human_bytes, report
from tfshrink.reporting.quant import HEALTHY_RMSE_SCALE, read_quant_errors

DEBUGGER_CSV = """\
op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,scale,zero_point,tensor_name
CONV_2D,5,432,0.01,0.0,0.02,0.0000081,0.0053,-128,conv/Relu
MEAN,7,4,0.01,0.0,0.02,0.00002,0.0040,-128,gap/Mean
FULLY_CONNECTED,9,5,0.01,0.0,0.02,0.00000025,0.0039,-128,scores/MatMul
"""


@pytest.fixture(scope="module")
def quant_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quant") / "layer_stats.csv"
    path.write_text(DEBUGGER_CSV)
    return path


@pytest.fixture(scope="module")
def html_report(tmp_path_factory: pytest.TempPathFactory, keras_pb: Path, tflite_file: Path,
                int8_tflite_file: Path, quant_csv: Path) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = report([keras_pb, tflite_file, int8_tflite_file], out, names=["frozen", "float", "int8"],
                    quant_errors=quant_csv, runs=3, samples=2, title="Two-IO model")
    return out, result


def test_report_is_self_contained(html_report: tuple[Path, object]) -> None:
    path, result = html_report
    html = path.read_text(encoding="utf-8")
    assert result.bytes == path.stat().st_size and html.startswith("<!DOCTYPE html>")
    assert "http://" not in html and "https://" not in html
    # no resource loaded from anywhere: no src/href attributes, no CSS url(), no @import
    assert not re.search(r"\b(src|href)\s*=", html) and "url(" not in html and "@import" not in html
    assert "<style>" in html and html.count("<svg") == 3  # size, latency, quantization error


def test_report_contains_the_numbers(html_report: tuple[Path, object], keras_pb: Path, tflite_file: Path,
                                     int8_tflite_file: Path) -> None:
    path, result = html_report
    html = path.read_text(encoding="utf-8")
    assert "<title>Two-IO model</title>" in html
    for p in (keras_pb, tflite_file, int8_tflite_file):
        assert f"{p.stat().st_size:,} B" in html  # size on disk
    comparison = result.comparison
    for m in comparison.models:
        assert f"{m.latency_p50_ms:.3f} ms" in html  # latency p50, table and chart
    int8 = comparison.models[2]
    assert f"{int8.cosine:.6f}" in html and f"{int8.agreement.outputs[0].max_abs:.4g}" in html
    assert "graphdef" in html and "tflite" in html and "nodes" in html and " ops" in html
    assert "image" in html and "float32[?,12,12,3]" in html and "int8[?,12,12,3]" in html  # inputs
    assert "conv/Relu" in html and "0.537" in html and "0.289 rounding only" in html  # the error chart
    assert "1 of 3 layer(s) above 0.7: <code>gap/Mean</code> (1.118)" in html
    assert [e.layer for e in result.quant_errors] == ["conv/Relu", "gap/Mean", "scores/MatMul"]


def test_one_model_report_has_no_agreement(tflite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    result = report([tflite_file], out, bench=False)
    html = out.read_text(encoding="utf-8")
    assert result.names == ("two_io.tflite",) and "Agreement" not in html and "two_io.tflite" in html


def test_report_renders_in_headless_chromium(html_report: tuple[Path, object], tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium installed (chromium, chromium-browser or google-chrome on PATH)")
    from PIL import Image

    path, _ = html_report
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=60)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    not_white = np.any(pixels < 240, axis=2)
    assert not_white.mean() > 0.02  # text, tables and bars, not a blank page
    colours = {tuple(c) for c in pixels[not_white][::50]}
    assert len(colours) > 20  # the bar charts' colours, not only grey text


def test_quant_errors_from_debugger_columns_and_ratio_columns(quant_csv: Path, tmp_path: Path) -> None:
    errors = read_quant_errors(quant_csv)
    assert errors[0].rmse_scale == pytest.approx(np.sqrt(0.0000081) / 0.0053)
    assert errors[0].op == "CONV_2D" and [e.flagged for e in errors] == [False, True, False]
    simple = tmp_path / "simple.csv"
    simple.write_text("layer,rmse/scale\nconv1,0.29\nfc,0.9\n")
    assert [(e.layer, e.rmse_scale, e.flagged) for e in read_quant_errors(simple)] == [
        ("conv1", 0.29, False), ("fc", 0.9, True)]
    assert read_quant_errors(tmp_path)[0].layer == "conv1"  # a folder holding one CSV
    convert_csv = tmp_path / "layer_errors.csv"  # what tfshrink convert --report DIR writes
    convert_csv.write_text("index,op,layer,rmse_scale,flagged,kept_float,rmse,scale\n"
                           "0,CONV_2D,conv,0.31,False,False,0.01,0.03\n"
                           "1,FULLY_CONNECTED,fc,0.95,False,True,0.02,0.02\n"
                           "2,MEAN,gap,0.8,True,False,0.02,0.025\n")
    layers = read_quant_errors(tmp_path)  # the folder: layer_errors.csv first
    assert [(e.layer, e.op, e.flagged, e.kept_float) for e in layers] == [
        ("conv", "CONV_2D", False, False), ("fc", "FULLY_CONNECTED", False, True), ("gap", "MEAN", True, False)]
    assert abs(HEALTHY_RMSE_SCALE - 0.2887) < 1e-4


def test_bad_quant_csv_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a per-layer quantization error CSV"):
        read_quant_errors(bad)
    bad.write_text("layer,rmse/scale\nconv,abc\n")
    with pytest.raises(UserError, match=r"bad.csv:2: not a number"):
        read_quant_errors(bad)


def test_bar_chart_is_deterministic_svg() -> None:
    bars = [Bar("a", 1.0), Bar("b <&>", 2.5), Bar("c", None)]
    svg = bar_chart(bars, title="T", unit="ms")
    assert svg == bar_chart(bars, title="T", unit="ms")
    assert svg.startswith("<svg") and "b &lt;&amp;&gt;" in svg and "n/a" in svg and "2.5 ms" in svg
    assert human_bytes(1536) == "1.50 KiB" and human_bytes(12) == "12 B"


def test_cli_report_and_bad_input(keras_pb: Path, tflite_file: Path, quant_csv: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(keras_pb), str(tflite_file), "-o", str(out), "--no-bench", "--names", "pb,lite"])
    assert exit_info.value.code == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    for args, message in (([str(keras_pb), "missing.pb"], "missing.pb: no such file or folder"),
                          ([str(keras_pb), "--quant-errors", str(tmp_path / "none.csv")],
                           "no such quantization"),
                          ([str(keras_pb), str(tflite_file), "--names", "x"], "1 name(s) for 2 model(s)")):
        bad_out = tmp_path / "bad.html"
        with pytest.raises(SystemExit) as exit_info:
            main(["report", *args, "-o", str(bad_out), "--no-bench"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and message in err and "\n" not in err
        assert not bad_out.exists()  # nothing written
    with pytest.raises(SystemExit) as exit_info:  # never overwrite an input
        main(["report", str(keras_pb), "-o", str(keras_pb), "--no-bench"])
    assert exit_info.value.code == 2 and "overwrite the input" in capsys.readouterr().err

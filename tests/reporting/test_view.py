"""`tfshrink view`: Netron serves the model on localhost."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tfshrink.cli import main
from tfshrink.errors import UserError
from tfshrink.reporting.view import view


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _served_file(base: str) -> str:
    index = _get(base + "/").decode("utf-8")
    found = re.search(r'<meta name="file" content="/data/([^"]+)">', index)
    assert found, "Netron's page names no model file"
    return found.group(1)


def test_view_serves_a_tflite_file(tflite_file: Path) -> None:
    port = _free_port()
    with view(tflite_file, port=port, browse=False) as server:
        assert server.url == f"http://localhost:{port}" and server.running
        name = _served_file(server.url)
        assert name == tflite_file.name
        assert _get(f"{server.url}/data/{name}") == tflite_file.read_bytes()
    assert not server.running


def test_view_freezes_a_checkpoint_first(onet_ckpt: Path) -> None:
    with view(onet_ckpt, browse=False) as server:
        assert server.format == "checkpoint" and server.served.suffix == ".pb" and server.note
        tmp = server.served.parent
        data = _get(f"{server.url}/data/{_served_file(server.url)}")
        assert data == server.served.read_bytes() and len(data) > 100_000
    assert not tmp.exists()  # the temporary frozen graph is removed


def test_view_savedmodel_serves_saved_model_pb(saved_model_dir: Path) -> None:
    with view(saved_model_dir, browse=False) as server:
        assert server.served.name == "saved_model.pb"  # a private copy of it
        assert server.served.read_bytes() == (saved_model_dir / "saved_model.pb").read_bytes()
        assert _served_file(server.url) == "saved_model.pb"


def test_port_in_use_is_a_user_error(tflite_file: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("localhost", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on localhost is in use"):
            view(tflite_file, port=port, browse=False)


def test_cli_view_no_browser_serves_until_stopped(tflite_file: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tfshrink", "view", str(tflite_file), "--port", str(port),
               "--no-browser"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # printed once the server is up
        assert f"at http://localhost:{port}" in line, f"stdout: {line!r}"
        assert _get(f"http://localhost:{port}/data/{tflite_file.name}") == tflite_file.read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("localhost", port)) != 0:
                break
        time.sleep(0.1)
    else:
        pytest.fail("the server still answers after Ctrl-C")


def test_view_of_a_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(tmp_path / "missing.tflite"), "--no-browser"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    missing = tmp_path / "missing.tflite"
    assert captured.err.strip() == f"error: {missing}: no such file or folder (check the path)"

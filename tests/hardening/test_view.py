"""Issue 16: `tfshrink view` serves the model and nothing else, to this machine only."""

from __future__ import annotations

import http.client
import shutil
from pathlib import Path

from tfshrink.reporting.view import view


def _request(port: int, path: str, host: str = "localhost") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_only_the_model_is_served(tflite_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (folder / "notes.txt").write_text("secret notes")
    model = folder / 'we"ird <name>.tflite'
    shutil.copy(tflite_file, model)
    with view(model, browse=False) as server:
        port = server.port
        status, page = _request(port, "/")
        assert status == 200
        assert b'we_ird__name_.tflite' in page and b'we"ird' not in page  # the name reaches the page escaped
        assert _request(port, "/data/we_ird__name_.tflite") == (200, tflite_file.read_bytes())
        for path in ("/data/notes.txt", "/data/.ssh/id_rsa", "/data/../models/notes.txt", "/data/%2e%2e/notes.txt"):
            status, body = _request(port, path)
            assert status == 404 and b"secret" not in body and b"PRIVATE" not in body, path
        assert server.served.parent != folder


def test_requests_for_another_host_are_refused(tflite_file: Path) -> None:
    with view(tflite_file, browse=False) as server:
        assert _request(server.port, "/", host="evil.example:80")[0] == 403
        assert _request(server.port, "/", host=f"127.0.0.1:{server.port}")[0] == 200
        assert _request(server.port, "/", host=f"[::1]:{server.port}")[0] == 200


def test_the_port_is_free_again_right_after_stopping(tflite_file: Path) -> None:
    with view(tflite_file, browse=False) as first:
        port = first.port
        _request(port, "/")
    with view(tflite_file, browse=False, port=port) as second:  # no 60 s TIME_WAIT refusal
        assert second.port == port and _request(port, "/")[0] == 200

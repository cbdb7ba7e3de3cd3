"""`tfshrink view`: open a model's graph in Netron (the `netron` package), served on localhost.

Netron reads .tflite, .keras/.h5, frozen .pb/.pbtxt and a SavedModel's saved_model.pb itself. A TF1
checkpoint is frozen to a temporary .pb first (outputs detected; the .meta graph, training
machinery included, when they cannot be told apart), removed again when the server stops.

Netron's server answers for every file in the served file's folder. So tfshrink serves a copy (a
hard link where it can) of the one model file, under a fixed name, from a private temporary
folder: other files of the user's folder are not reachable. Requests whose Host header is not
localhost, 127.0.0.1 or [::1] get 403, so a web page cannot reach the server by DNS rebinding.

Netron's page, as its own server sends it, would call out: ipinfo.io (to decide whether to ask for
cookie consent, then a consent banner that holds the graph back until clicked) and Google
Analytics. tfshrink's page makes no network call: a Content-Security-Policy header limits every
fetch, script, worker and beacon to the local server; the `consent` cookie Netron checks is preset
(no banner, no ipinfo.io); and the page's build date is dropped, so an older Netron never locks the
page behind its "Please update" prompt (it counts 180 days from that date).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfshrink.errors import UserError
from tfshrink.freezer import freeze
from tfshrink.model import detect_format

__all__ = ["ViewServer", "view"]

HOST = "localhost"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}

# Sent with every response: the page may load and connect only to this server. Netron's index.html
# has inline styles and builds images from data: URLs (PNG export); nothing else is allowed.
SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'self'; connect-src 'self'; worker-src 'self'; "
     "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
     "object-src 'none'; frame-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_BUILD_DATE = re.compile(rb'<meta name="date" content="[^"]*">\s*')


@dataclass
class ViewServer:
    """A running Netron server. `served` is the file Netron shows; `note` says how it was made."""

    source: str
    format: str
    served: Path
    host: str
    port: int
    note: str = ""
    _tmp: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        import netron

        return bool(netron.status((self.host, self.port)))

    def stop(self) -> None:
        """Stop serving and remove the temporary files (idempotent)."""
        import netron

        netron.stop((self.host, self.port))
        deadline = time.monotonic() + 2.0  # the server thread notices within its 0.25 s poll
        while netron.status((self.host, self.port)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def wait(self) -> None:
        """Block until interrupted (Ctrl-C), then stop."""
        try:
            while self.running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UserError(f"--port {port} is not a TCP port",
                        "give 1-65535, or leave --port out for a free one")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-stopped server's port is free
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
            raise UserError(f"port {port} on {host} {why}",
                            "pick another with --port, or leave --port out") from None


def _servable(source: str, fmt: str, path: Path,
              outputs: Sequence[str] | None) -> tuple[Path, Path | None, str]:
    """(file for Netron, temporary folder to remove or None, note)."""
    if fmt == "savedmodel":
        pb = path / "saved_model.pb"
        return (pb if pb.is_file() else path / "saved_model.pbtxt"), None, "the SavedModel's saved_model.pb"
    if fmt != "checkpoint":
        return path, None, ""

    tmp = Path(tempfile.mkdtemp(prefix="tfshrink-view-"))
    frozen = tmp / f"{path.name}.frozen.pb"
    try:
        freeze(path, frozen, outputs=list(outputs) if outputs else None, verify=False)
        return frozen, tmp, "the checkpoint frozen to a temporary .pb"
    except UserError as exc:
        meta = Path(f"{path}.meta")
        if not meta.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return meta, None, f"the checkpoint's .meta graph (not frozen: {exc.message})"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _private_copy(served: Path, tmp: Path | None) -> tuple[Path, Path]:
    """`served` alone in a private folder (the existing temporary one, or a new one), its name
    reduced to letters, digits, `.`, `_` and `-` (Netron writes it into its page unescaped)."""
    folder = tmp if tmp is not None else Path(tempfile.mkdtemp(prefix="tfshrink-view-"))
    name = re.sub(r"[^A-Za-z0-9._-]", "_", served.name).lstrip(".") or "model"
    target = folder / name
    if target != served:
        try:
            os.link(served, target)
        except OSError:  # another file system, or links not allowed: copy
            shutil.copyfile(served, target)
    return target, folder


def _guard_host() -> None:
    """Make Netron's request handler answer 403 to any Host but this machine's loopback names, send
    SECURITY_HEADERS with every response, and serve its page without the consent banner and the
    build date (see the module's note).

    Private: netron.server exposes no hook for this; its handler class is replaced by a subclass
    that checks the Host header first (once per process), and its server's request threads are
    made daemons."""
    import netron.server as server

    base = server._HTTPRequestHandler
    if getattr(base, "tfshrink_guarded", False):
        return

    class Guarded(base):  # type: ignore[misc, valid-type]
        tfshrink_guarded = True
        _page = False  # this response is Netron's page (one request per handler: HTTP/1.0)

        def end_headers(self) -> None:
            for name, value in SECURITY_HEADERS:
                self.send_header(name, value)
            if self._page:  # Netron reads it from document.cookie: not HttpOnly
                self.send_header("Set-Cookie", f"consent={int(time.time() * 1000)}; Path=/; "
                                               "Max-Age=2592000; SameSite=Strict")
            super().end_headers()

        def _write(self, status_code: int, content_type: str | None, content: bytes | None) -> None:
            if content_type == "text/html" and content:
                self._page = True
                content = _BUILD_DATE.sub(b"", content)
            super()._write(status_code, content_type, content)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            host = (self.headers.get("Host") or "").strip().lower()
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name not in LOCAL_HOSTS:
                body = b"403: tfshrink view answers only to localhost"
                self.send_response(403)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                return
            super().do_GET()

    server._HTTPRequestHandler = Guarded
    # A browser's idle (preconnected) connection blocks a handler thread in readline; as a daemon
    # thread it cannot keep the process alive once the server has stopped (SIGTERM, Ctrl-C).
    server._ThreadedHTTPServer.daemon_threads = True


def view(model: str | Path, *, port: int | None = None, browse: bool = True,
         outputs: Sequence[str] | None = None, host: str = HOST) -> ViewServer:
    """Serve `model` (any format) in Netron on `host`:`port` (a free port when None) and, with
    `browse`, open it in the web browser. Returns at once; call `.wait()` or `.stop()` on the result.
    `outputs` name a checkpoint's outputs for freezing (default: detected)."""
    fmt, path = detect_format(model)  # a missing or unknown file fails here
    if port is not None:
        _check_port(host, port)
    served, tmp, note = _servable(str(model), fmt, path, outputs)
    try:
        served, tmp = _private_copy(served, tmp)
        _guard_host()
        import netron

        root = logging.getLogger()
        quiet = logging.NullHandler()
        root.addHandler(quiet)  # keeps netron.serve from calling logging.basicConfig(INFO) on the root logger
        try:
            host_port = netron.serve(str(served), None, address=(host, port), browse=browse)
        finally:
            root.removeHandler(quiet)
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot serve on {host}:{port or 0} ({exc.strerror or exc})",
                        "pick another --port") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ViewServer(str(model), fmt, served, host_port[0], int(host_port[1]), note, tmp)

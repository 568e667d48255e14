"""The download stage: every source kind, content verified, nothing half-written."""

from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from mnist_cnn.dataset import DataError
from mnist_cnn.download import ENV_VAR, choose_source, download
from mnist_cnn.mnist import read_raw


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    lie_about_length = False

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        length = len(body) * 2 if self.lie_about_length else len(body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A loopback HTTP server; tests put files into ``server.files``."""
    handler = type("Handler", (_Handler,), {"files": {}, "lie_about_length": False})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.handler = handler
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def altered_copy(mnist: Path, dest: Path, **changes) -> Path:
    with np.load(mnist) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    for name, fn in changes.items():
        arrays[name] = fn(arrays[name])
    np.savez(dest, **arrays)
    return dest


def test_from_a_path(tmp_path, mnist_npz):
    out = tmp_path / "raw" / "mnist.npz"
    download(str(mnist_npz), out)
    assert out.read_bytes() == mnist_npz.read_bytes()
    assert leftovers(out.parent) == ["mnist.npz"]


def test_from_a_file_url(tmp_path, mnist_npz):
    out = tmp_path / "mnist.npz"
    download(mnist_npz.resolve().as_uri(), out)
    assert read_raw(out)["y_train"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_from_loopback_http(tmp_path, mnist_npz, server):
    server.handler.files["/mnist.npz"] = mnist_npz.read_bytes()
    out = tmp_path / "mnist.npz"
    download(f"{server.url}/mnist.npz", out)
    assert out.read_bytes() == mnist_npz.read_bytes()


def test_http_truncated_transfer_is_rejected(tmp_path, mnist_npz, server):
    server.handler.files["/mnist.npz"] = mnist_npz.read_bytes()
    server.handler.lie_about_length = True  # the connection closes early
    out = tmp_path / "raw" / "mnist.npz"
    with pytest.raises(DataError, match="/mnist.npz: .*(truncated|cannot download)"):
        download(f"{server.url}/mnist.npz", out)
    assert leftovers(out.parent) == []


def test_http_not_found(tmp_path, server):
    out = tmp_path / "raw" / "mnist.npz"
    with pytest.raises(DataError, match=r"cannot download \(Not Found\).*MNIST_NPZ="):
        download(f"{server.url}/missing.npz", out)
    assert leftovers(out.parent) == []


def test_unreachable_url_says_how_to_work_offline(tmp_path):
    out = tmp_path / "raw" / "mnist.npz"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    with pytest.raises(DataError, match=r"http://127.0.0.1:9/mnist.npz: cannot download.*"
                                        r"MNIST_NPZ=/path/to/mnist.npz"):
        download("http://127.0.0.1:9/mnist.npz", out)
    assert leftovers(out.parent) == []


def test_truncated_file_is_rejected(tmp_path, mnist_npz):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(mnist_npz.read_bytes()[: mnist_npz.stat().st_size // 2])
    out = tmp_path / "raw" / "mnist.npz"
    with pytest.raises(DataError, match=r"bad.npz: not a readable .npz file"):
        download(str(bad), out)
    assert leftovers(out.parent) == []


def test_not_a_zip(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("<html>captive portal</html>")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz file"):
        download(str(bad), tmp_path / "raw" / "mnist.npz")


def test_altered_content_fails_the_checksum(tmp_path, mnist_npz):
    def flip(a):
        a[0, 0, 0] ^= 1
        return a

    bad = altered_copy(mnist_npz, tmp_path / "bad.npz", x_test=flip)
    out = tmp_path / "raw" / "mnist.npz"
    out.parent.mkdir()
    out.write_bytes(b"previous output")
    with pytest.raises(DataError, match="bad.npz: content of x_test fails the sha256 check"):
        download(str(bad), out)
    assert out.read_bytes() == b"previous output"  # untouched
    assert leftovers(out.parent) == ["mnist.npz"]


@pytest.mark.parametrize(("change", "expected"), [
    ({"y_train": lambda a: a.astype(np.int64)}, "array y_train is int64[60000], expected uint8"),
    ({"x_test": lambda a: a[:5000]}, "array x_test is uint8[5000, 28, 28], expected"),
    ({"y_test": lambda a: np.where(a == 9, 11, a).astype(np.uint8)},
     "y_test has labels outside 0-9"),
])
def test_wrong_arrays(tmp_path, mnist_npz, change, expected):
    bad = altered_copy(mnist_npz, tmp_path / "bad.npz", **change)
    with pytest.raises(DataError, match=expected.replace("[", r"\[")):
        download(str(bad), tmp_path / "out" / "mnist.npz")


def test_missing_array(tmp_path, mnist_npz):
    with np.load(mnist_npz) as npz:
        np.savez(tmp_path / "bad.npz", x_train=npz["x_train"])
    with pytest.raises(DataError, match=r"missing arrays \['x_test', 'y_test', 'y_train'\]"):
        download(str(tmp_path / "bad.npz"), tmp_path / "out" / "mnist.npz")


def test_source_precedence(tmp_path, mnist_npz):
    cache = tmp_path / "keras" / "datasets" / "mnist.npz"
    url = "https://example.invalid/mnist.npz"
    assert choose_source(None, cache, url) == url
    cache.parent.mkdir(parents=True)
    shutil.copy(mnist_npz, cache)
    assert choose_source(None, cache, url) == str(cache)
    assert choose_source(str(mnist_npz), cache, url) == str(mnist_npz)
    assert choose_source("http://host/m.npz", cache, url) == "http://host/m.npz"
    with pytest.raises(DataError, match=f"{ENV_VAR}=/no/such.npz: no such file"):
        choose_source("/no/such.npz", cache, url)

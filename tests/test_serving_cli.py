"""`ferkit serve` as a user runs it: help, one-line errors, --no-batching and --workers."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from synth import make_faces
from test_serving import PHOTO, checkpoint, make_checkpoint  # noqa: F401 (fixture)

from ferkit.serving.process import ServerProcess, free_port, http_request, post_image, post_json


def ferkit(*args: str, code: str | None = None, timeout: float = 120
           ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "ferkit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_serve_help_lists_the_options():
    res = ferkit("serve", "--help")
    assert res.returncode == 0, res.stderr
    for opt in ("--host", "--port", "--model", "--workers", "--max-upload-mb", "--max-pixels",
                "--no-batching", "--batch-wait-ms", "--max-batch", "--decode-slots"):
        assert opt in res.stdout, opt


def test_missing_serve_extra_is_one_clear_line():
    code = ("import sys; sys.modules['fastapi'] = None; sys.argv = ['ferkit', 'serve'];"
            "from ferkit.cli.app import main; main()")
    res = ferkit(code=code)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "fastapi" in lines[0] and "pip install 'ferkit[serve]'" in lines[0]


def test_bad_model_is_one_line_error(tmp_path):
    res = ferkit("serve", "--model", str(tmp_path / "missing.pt"), "--port", str(free_port()))
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error:") and "missing.pt" in res.stderr
    assert "Traceback" not in res.stderr


def test_port_in_use_is_one_line_error(checkpoint):  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = ferkit("serve", "--model", str(checkpoint), "--port", str(port))
    assert res.returncode == 1
    assert "--port" in res.stderr and "Traceback" not in res.stderr


def test_no_batching_with_two_workers(checkpoint):  # noqa: F811
    with ServerProcess(checkpoint, ["--no-batching", "--workers", "2"]) as server:
        info = http_request("GET", server.url + "/v1/model").json()
        assert info["batching"]["enabled"] is False
        res = post_image(server.url + "/v1/predict", PHOTO.read_bytes())
        assert res.status == 200 and len(res.json()["faces"]) == 1, res
        faces, _ = make_faces(1)
        payload = {"faces": [faces[0].tolist()]}
        barrier = threading.Barrier(8)

        def client(_: int) -> int:
            barrier.wait()
            return post_json(server.url + "/v1/classify", payload).status

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(client, range(8))) == [200] * 8
        for _ in range(4):  # whichever worker answers: it never merged requests
            stats = http_request("GET", server.url + "/healthz").json()["batching"]
            assert stats["multi_call_batches"] == 0 and stats["batches"] == stats["calls"]
        assert server.alive()


def test_make_checkpoint_is_loadable(tmp_path):
    from ferkit.models.predictor import Predictor

    pred = Predictor.load(make_checkpoint(tmp_path / "x.pt"), device="cpu")
    assert pred.arch == "shallow-cnn" and len(pred.classes) == 7

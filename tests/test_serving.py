"""The HTTP API against a real `python -m ferkit serve` process on a free loopback port."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from synth import make_faces

from ferkit.classes import CLASSES
from ferkit.models.checkpoint import save_checkpoint
from ferkit.models.registry import create_model
from ferkit.serving.process import (
    ServerProcess,
    encode_multipart,
    http_request,
    post_image,
    post_json,
)

PHOTO = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))  # 512x600, one face


def make_checkpoint(path: Path, accuracy: float = 0.612) -> Path:
    torch.manual_seed(0)
    model = create_model("shallow-cnn")
    save_checkpoint(path, {"arch": "shallow-cnn", "arch_kwargs": {}, "classes": list(CLASSES),
                           "normalization": {"mean": 0.5, "std": 0.25}, "config": {}, "epoch": 0,
                           "metrics": {"test_accuracy": accuracy},
                           "state_dict": model.state_dict()})
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve-model") / "tiny.pt")


@pytest.fixture(scope="module")
def server(checkpoint):
    # Small limits so the 413 paths are cheap to hit; a longer batch window so the concurrency
    # test sees merged batches even on a busy 2-core machine; fewer decode slots than threads on
    # any machine, so the test of the decode bound means the same everywhere.
    with ServerProcess(checkpoint, ["--max-upload-mb", "1", "--max-pixels", "4000000",
                                    "--batch-wait-ms", "25", "--threads", "4",
                                    "--decode-slots", "2"]) as srv:
        yield srv
        assert srv.alive(), f"server died during the tests:\n{srv.log()[-3000:]}"


def encode(img: np.ndarray | Image.Image, fmt: str = "PNG", **kw) -> bytes:
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression-bomb probe)."""
    data = bytearray(encode(np.zeros((1, 1), np.uint8)))
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def assert_error(res, status: int, code: str | None = None) -> dict:
    assert res.status == status, res
    assert res.headers["content-type"].startswith("application/json"), res.headers
    body = res.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if code:
        assert body["error"] == code, body
    return body


# -- service endpoints ------------------------------------------------------------------------

def test_healthz(server):
    res = http_request("GET", server.url + "/healthz")
    assert res.status == 200
    body = res.json()
    assert body["status"] == "ok" and body["model"] == "tiny.pt"
    assert {"calls", "batches", "multi_call_batches"} <= set(body["batching"])


def test_model_info(server):
    info = http_request("GET", server.url + "/v1/model").json()
    assert info["name"] == "tiny.pt" and info["arch"] == "shallow-cnn"
    assert info["classes"] == list(CLASSES)
    assert info["input_size"] == [48, 48]
    assert info["accuracy"] == pytest.approx(0.612) and info["accuracy_metric"] == "test_acc"
    assert info["batching"]["enabled"] is True and info["batching"]["max_wait_ms"] == 25
    assert info["limits"]["max_upload_mb"] == 1 and info["limits"]["max_pixels"] == 4_000_000


def test_openapi_and_docs(server):
    spec = http_request("GET", server.url + "/openapi.json").json()
    assert {"/v1/predict", "/v1/classify", "/v1/model", "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/jpeg" in body


def test_docs_page_needs_no_network(server):
    """/docs is one self-contained document: no CDN (Swagger UI's is unreachable offline)."""
    spec = http_request("GET", server.url + "/openapi.json").json()
    res = http_request("GET", server.url + "/docs")
    assert res.status == 200 and res.headers["content-type"].startswith("text/html")
    page = res.body.decode()
    for tag in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert tag not in page.lower(), tag
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    for cdn in ("jsdelivr", "unpkg", "cdnjs", "swagger-ui-dist", "googleapis"):
        assert cdn not in page.lower(), cdn
    # The browser may load nothing at all, and the page's one inline style is allowed by hash.
    csp = res.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp
    # It points at the schema and documents every endpoint, with examples for this server.
    assert 'href="openapi.json"' in page
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "head":
                continue  # listed once, as GET
            assert f'{method.upper()}</span><code>{path}</code>' in page, (method, path)
            assert op["summary"] in page
    assert f"curl -F image=@photo.jpg {server.url}/v1/predict" in page
    assert "$SERVER" not in page
    assert http_request("HEAD", server.url + "/docs").status == 200
    assert http_request("HEAD", server.url + "/healthz").status == 200  # for load balancers
    schema = json.loads(http_request("GET", server.url + "/openapi.json").body)
    operation_ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))  # FastAPI warns on duplicates
    # The client's Host header shows up in the examples only escaped.
    evil = http_request("GET", server.url + "/docs", headers={"Host": "x<b>y"})
    assert evil.status in (200, 400) and b"<b>" not in evil.body
    for gone in ("/redoc", "/docs/oauth2-redirect"):  # the CDN-based pages are not served
        assert_error(http_request("GET", server.url + gone), 404, "not_found")


def test_web_page_files(server):
    page = http_request("GET", server.url + "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'src="app.js"' in page.body and b'href="style.css"' in page.body
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = http_request("GET", server.url + "/app.js")
    assert js.status == 200 and "javascript" in js.headers["content-type"]
    assert b"getUserMedia" in js.body
    css = http_request("GET", server.url + "/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert http_request("HEAD", server.url + "/").status == 200


# -- /v1/predict --------------------------------------------------------------------------------

def check_photo_result(body: dict) -> None:
    assert body["width"] == 512 and body["height"] == 600
    assert body["model"] == "tiny.pt" and body["elapsed_ms"] > 0
    assert len(body["faces"]) == 1, body
    face = body["faces"][0]
    x, y, w, h = face["box"]
    assert 100 < x < 300 and 50 < y < 250 and 100 < w < 300 and 100 < h < 300, face["box"]
    assert face["expression"] in CLASSES
    assert list(face["probabilities"]) == list(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert face["score"] == max(face["probabilities"].values())


def test_predict_multipart(server):
    before = http_request("GET", server.url + "/healthz").json()
    res = post_image(server.url + "/v1/predict", PHOTO.read_bytes())
    assert res.status == 200, res
    check_photo_result(res.json())
    after = http_request("GET", server.url + "/healthz").json()
    assert after["requests"]["predict"] == before["requests"]["predict"] + 1
    # The faces found by detection are classified through the micro-batcher.
    assert after["batching"]["calls"] == before["batching"]["calls"] + 1


def test_predict_raw_body_matches_multipart(server):
    data = PHOTO.read_bytes()
    raw = post_image(server.url + "/v1/predict", data, multipart=False)
    assert raw.status == 200, raw
    check_photo_result(raw.json())
    multi = post_image(server.url + "/v1/predict", data).json()
    assert raw.json()["faces"] == multi["faces"]


def test_predict_unlabelled_part_and_png(server):
    png = encode(Image.open(PHOTO), "PNG")
    body, ctype = encode_multipart([("image", "photo.png", png, "application/octet-stream")])
    res = http_request("POST", server.url + "/v1/predict", body, {"Content-Type": ctype})
    assert res.status == 200, res
    check_photo_result(res.json())


def test_predict_no_face(server):
    res = post_image(server.url + "/v1/predict", encode(np.full((240, 320, 3), 90, np.uint8)),
                     "image/png")
    assert res.status == 200, res
    body = res.json()
    assert body["faces"] == [] and (body["width"], body["height"]) == (320, 240)


def test_predict_exif_rotation_reports_upright_size(server):
    im = Image.open(PHOTO)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it by 90 degrees
    data = encode(im.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())
    res = post_image(server.url + "/v1/predict", data)
    assert res.status == 200, res
    check_photo_result(res.json())  # upright again: 512 wide, 600 high, the face where it was


def test_predict_large_photo_is_downscaled_and_boxes_mapped_back(server):
    big = Image.open(PHOTO).resize((2048, 2400))  # 4.9 MP: over the 2 MP working size
    res = post_image(server.url + "/v1/predict", encode(big, "JPEG", quality=70),
                     multipart=False)
    # 4.9 MP is above this server's --max-pixels 4000000: refused before decoding
    assert_error(res, 413, "too_many_pixels")
    big = Image.open(PHOTO).resize((1536, 1800))  # 2.8 MP: accepted, detected on a smaller copy
    res = post_image(server.url + "/v1/predict", encode(big, "JPEG", quality=70))
    assert res.status == 200, res
    body = res.json()
    assert (body["width"], body["height"]) == (1536, 1800)
    x, y, w, h = body["faces"][0]["box"]
    assert 300 < x < 900 and 150 < y < 750 and 300 < w < 900, body["faces"][0]["box"]


def test_concurrent_big_pngs_are_decoded_a_few_at_a_time(server):
    """Decodes wait for one of --decode-slots (2) even with more threads (4) and requests (8).

    Big PNG face crops to /v1/classify: decoding costs the same as for /v1/predict (and goes
    through the same gate), without the detection that would make this test slow."""
    before = http_request("GET", server.url + "/healthz").json()["decoding"]
    assert before["slots"] == 2
    x = np.linspace(0, 255, 1900, dtype=np.uint8)
    png = encode(np.broadcast_to(x[None, :, None], (2000, 1900, 3)).copy())  # 3.8 MP
    body, ctype = encode_multipart([("faces", "face.png", png, "image/png")])
    barrier = threading.Barrier(8)

    def client(_: int) -> int:
        barrier.wait()
        res = http_request("POST", server.url + "/v1/classify", body, {"Content-Type": ctype})
        assert res.status == 200 and len(res.json()["results"]) == 1, res
        return res.status

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(client, range(8))) == [200] * 8
    after = http_request("GET", server.url + "/healthz").json()["decoding"]
    assert after["decodes"] - before["decodes"] == 8
    assert 1 <= after["max_active"] <= 2
    assert after["active"] == 0 and after["waiting"] == 0


def test_aborted_uploads_log_one_short_line_each(server):
    """Clients that hang up mid-upload are routine: no 500, no traceback, one INFO line each."""
    n = 10
    offset = len(server.log())
    photo = PHOTO.read_bytes()
    for i in range(n):
        if i % 2:
            body, ctype = encode_multipart([("image", "photo.jpg", photo, "image/jpeg")])
            path = "/v1/predict"
        else:
            body, ctype = photo, ("image/jpeg" if i % 4 else "application/json")
            path = "/v1/predict" if i % 4 else "/v1/classify"
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) + 400_000}\r\n\r\n").encode()  # < --max-upload-mb
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head + body[:len(body) // 2])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = server.log()[offset:]
        if new.count("client disconnected") >= n or "Traceback" in new:
            break
        time.sleep(0.05)
    lines = new.splitlines()
    assert "Traceback" not in new and "internal error" not in new, new[:3000]
    assert len(lines) <= n + 2, new[:3000]
    dropped = [line for line in lines if "client disconnected" in line]
    assert len(dropped) == n, new
    assert all(line.startswith("INFO ferkit.serve: POST /v1/") for line in dropped), dropped
    assert all(len(line) < 200 for line in lines)
    # ... and the server answers as before.
    res = post_image(server.url + "/v1/predict", photo)
    assert res.status == 200, res
    check_photo_result(res.json())
    assert server.alive()


# -- /v1/predict: bad input ----------------------------------------------------------------------

def test_predict_wrong_content_types_415(server):
    url = server.url + "/v1/predict"
    assert_error(http_request("POST", url, b"hello", {"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type")
    assert_error(http_request("POST", url, b"{}", {"Content-Type": "application/json"}), 415)
    assert_error(http_request("POST", url, b"abc"), 415)  # no content type at all
    body, ctype = encode_multipart([("image", "notes.txt", b"hello", "text/plain")])
    assert_error(http_request("POST", url, body, {"Content-Type": ctype}), 415,
                 "unsupported_media_type")


def test_predict_undecodable_422(server):
    url = server.url + "/v1/predict"
    err = assert_error(post_image(url, b"this is not a jpeg at all"), 422, "undecodable_image")
    assert "not a readable image" in err["detail"]
    truncated = PHOTO.read_bytes()[:3000]
    assert_error(post_image(url, truncated, multipart=False), 422, "undecodable_image")
    assert_error(post_image(url, b"", multipart=False), 422, "empty_image")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    assert_error(post_image(url, svg, "image/svg+xml"), 422, "undecodable_image")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"  # Ghostscript never runs
    assert_error(post_image(url, eps, "image/x-eps", multipart=False), 422, "undecodable_image")


def test_predict_bad_multipart_422(server):
    url = server.url + "/v1/predict"
    body, ctype = encode_multipart([("photo", "a.jpg", PHOTO.read_bytes(), "image/jpeg")])
    err = assert_error(http_request("POST", url, body, {"Content-Type": ctype}), 422,
                       "missing_image")
    assert "'image'" in err["detail"]
    res = http_request("POST", url, b"--xx\r\ngarbage",
                       {"Content-Type": "multipart/form-data; boundary=xx"})
    assert res.status == 422, res
    res = http_request("POST", url, b"garbage", {"Content-Type": "multipart/form-data"})
    assert_error(res, 422, "bad_multipart")


def test_predict_upload_too_large_413(server):
    url = server.url + "/v1/predict"
    blob = b"\xff\xd8" + b"\0" * (1024 * 1024 + 10)
    err = assert_error(post_image(url, blob, multipart=False), 413, "upload_too_large")
    assert "--max-upload-mb" in err["detail"]
    assert_error(post_image(url, blob), 413, "upload_too_large")


def test_predict_chunked_upload_too_large_413(server):
    """No Content-Length: the server counts the bytes as they arrive."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b"\0" * 65536 for _ in range(40))  # 2.5 MB
    try:
        conn.request("POST", "/v1/predict", body=chunks,
                     headers={"Content-Type": "image/jpeg"}, encode_chunked=True)
        res = conn.getresponse()
        assert res.status == 413, res.read()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the client has sent everything
    finally:
        conn.close()


def test_decompression_bomb_refused_413(server):
    url = server.url + "/v1/predict"
    bomb = png_header_claiming(100_000, 100_000)  # 10 gigapixels claimed, 70 bytes sent
    err = assert_error(post_image(url, bomb, "image/png"), 413, "too_many_pixels")
    assert "pixels" in err["detail"]
    big = encode(np.zeros((2100, 2100), np.uint8))  # 4.4 MP, a few kB of PNG
    assert_error(post_image(url, big, "image/png", multipart=False), 413, "too_many_pixels")


def test_unknown_paths_and_methods_never_touch_files(server):
    for path in ("/nope", "/etc/passwd", "/static/../../etc/passwd", "/..%2f..%2fetc%2fpasswd",
                 "/v1/predict/../../pyproject.toml", "/app.js/../../../etc/passwd"):
        res = http_request("GET", server.url + path)
        assert res.status in (404, 405), (path, res)
        assert b"root:" not in res.body and b"[project]" not in res.body
    assert_error(http_request("GET", server.url + "/v1/predict"), 405, "method_not_allowed")
    assert_error(http_request("DELETE", server.url + "/healthz"), 405)


# -- /v1/classify -------------------------------------------------------------------------------

def direct_probabilities(checkpoint: Path, faces: np.ndarray) -> np.ndarray:
    from ferkit.models.predictor import Predictor

    return Predictor.load(checkpoint, device="cpu").predict_proba(faces)


def test_classify_json_base64_and_arrays(server, checkpoint):
    faces, _ = make_faces(1)  # 7 faces, one per class pattern
    payload = {"faces": [base64.b64encode(encode(f)).decode() for f in faces[:3]]
               + ["data:image/png;base64," + base64.b64encode(encode(faces[3])).decode()]
               + [f.tolist() for f in faces[4:]]}
    res = post_json(server.url + "/v1/classify", payload)
    assert res.status == 200, res
    body = res.json()
    assert body["model"] == "tiny.pt" and len(body["results"]) == 7
    expected = direct_probabilities(checkpoint, faces)
    for row, exp in zip(body["results"], expected, strict=True):
        got = np.array([row["probabilities"][c] for c in CLASSES])
        np.testing.assert_allclose(got, exp, atol=2e-4)
        assert row["expression"] == CLASSES[int(np.argmax(exp))]


def test_classify_any_size_color_and_multipart(server, checkpoint):
    faces, _ = make_faces(1)
    # A 96x96 RGB JPEG of a face: converted to 48x48 gray by the server.
    big = Image.fromarray(faces[0]).resize((96, 96)).convert("RGB")
    files = [("faces", "a.png", encode(faces[1]), "image/png"),
             ("faces", "b.jpg", encode(big, "JPEG", quality=95), "image/jpeg")]
    body, ctype = encode_multipart(files)
    res = http_request("POST", server.url + "/v1/classify", body, {"Content-Type": ctype})
    assert res.status == 200, res
    results = res.json()["results"]
    assert len(results) == 2
    exp = direct_probabilities(checkpoint, faces[1:2])[0]
    np.testing.assert_allclose([results[0]["probabilities"][c] for c in CLASSES], exp, atol=2e-4)


def test_classify_bad_input(server):
    url = server.url + "/v1/classify"
    assert_error(post_json(url, {"faces": ["@@@not base64@@@"]}), 422, "bad_base64")
    assert_error(post_json(url, {"faces": [[[0] * 48] * 47]}), 422, "bad_face_array")
    assert_error(post_json(url, {"faces": [[[300] * 48] * 48]}), 422, "bad_face_array")
    assert_error(post_json(url, {"faces": [{"x": 1}]}), 422, "bad_face")
    assert_error(post_json(url, {"faces": []}), 422, "missing_faces")
    assert_error(post_json(url, [1, 2]), 422, "missing_faces")
    assert_error(http_request("POST", url, b"{not json", {"Content-Type": "application/json"}),
                 422, "bad_json")
    assert_error(post_json(url, {"faces": [base64.b64encode(b"nope").decode()]}), 422,
                 "undecodable_image")
    assert_error(post_json(url, {"faces": [[[0] * 48] * 48] * 65}), 413, "too_many_faces")
    deep = b'{"faces": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(http_request("POST", url, deep, {"Content-Type": "application/json"}), 422)
    huge_face = base64.b64encode(encode(np.zeros((2100, 2100), np.uint8))).decode()
    assert_error(post_json(url, {"faces": [huge_face]}), 413, "too_many_pixels")
    assert_error(http_request("POST", url, b"x", {"Content-Type": "text/csv"}), 415)
    body, ctype = encode_multipart([("faces", "a.txt", b"hi", "text/plain")])
    assert_error(http_request("POST", url, body, {"Content-Type": ctype}), 415)


# -- concurrency and micro-batching ---------------------------------------------------------------

def test_concurrent_requests_all_succeed_and_are_batched(server, checkpoint):
    before = http_request("GET", server.url + "/healthz").json()["batching"]
    photo = PHOTO.read_bytes()
    faces, _ = make_faces(1)
    payload = {"faces": [f.tolist() for f in faces[:2]]}
    expected = direct_probabilities(checkpoint, faces[:2])
    barrier = threading.Barrier(16)
    health_ms: list[float] = []
    done = threading.Event()

    def poll_health() -> None:  # the event loop stays responsive while the model works
        while not done.is_set():
            start = time.perf_counter()
            assert http_request("GET", server.url + "/healthz").status == 200
            health_ms.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)

    def client(i: int) -> list[int]:
        barrier.wait()
        statuses = []
        for _ in range(3):
            if i % 2:
                res = post_image(server.url + "/v1/predict", photo)
                if res.status == 200:
                    assert len(res.json()["faces"]) == 1
            else:
                res = post_json(server.url + "/v1/classify", payload)
                if res.status == 200:
                    got = [[r["probabilities"][c] for c in CLASSES] for r in res.json()["results"]]
                    np.testing.assert_allclose(got, expected, atol=2e-4)
            statuses.append(res.status)
        return statuses

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            statuses = [s for result in pool.map(client, range(16)) for s in result]
    finally:
        done.set()
        poller.join()
    assert statuses == [200] * 48
    assert len(health_ms) >= 3 and max(health_ms) < 3000, health_ms
    after = http_request("GET", server.url + "/healthz").json()["batching"]
    assert after["calls"] - before["calls"] == 48
    assert after["batches"] - before["batches"] < 48  # some model runs served several requests
    assert after["multi_call_batches"] > before["multi_call_batches"]
    assert after["max_batch_calls"] > 1
    assert server.alive()

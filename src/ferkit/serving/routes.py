"""The routes of the app: the JSON API under /v1, /healthz, the page at /, /docs, and the
errors, always JSON `{"error": code, "detail": message}`.

`Service` is what the API routes share (the engine, the limits, the worker threads and the
decode gate); the app factory (ferkit.serving.app) makes one and registers the routes around
it. No route takes a path or file name from the client: the page's three files are read from
the package once, at start-up, and served from memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ferkit.classes import FACE_SIZE
from ferkit.errors import FerkitError
from ferkit.images import DecodedImage
from ferkit.serving.docs_page import DOCS_HEADERS, for_server
from ferkit.serving.engine import Engine
from ferkit.serving.limits import (
    ApiError,
    DecodeGate,
    Limits,
    check_part_type,
    decode_face,
    decode_image,
    face_from_json,
)
from ferkit.version import __version__

log = logging.getLogger("ferkit.serve")

STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "media-src 'self' blob: mediastream:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 415: "unsupported_media_type"}

_IMAGE_BODY = {"type": "string", "format": "binary"}
PREDICT_BODY = {
    "required": True,
    "description": "A photo: multipart/form-data with the file in field `image`, or the raw "
                   "bytes with an image/* content type.",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": _IMAGE_BODY}}},
        "image/jpeg": {"schema": _IMAGE_BODY},
        "image/png": {"schema": _IMAGE_BODY},
        "image/webp": {"schema": _IMAGE_BODY},
    },
}
CLASSIFY_BODY = {
    "required": True,
    "description": "Already-cropped faces, classified as they are (no detection). Any size and "
                   "format is converted to 48x48 gray. JSON: `{\"faces\": [...]}` where each "
                   "entry is a base64 PNG/JPEG (or a data: URL) or a 48x48 array of integers "
                   "0-255; or multipart/form-data with one or more files in field `faces`.",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["faces"], "properties": {"faces": {
                "type": "array", "items": {"oneOf": [
                    {"type": "string", "description": "base64 PNG/JPEG or data: URL"},
                    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}},
                     "description": "48 rows of 48 integers 0-255"}]}}}},
            "example": {"faces": ["iVBORw0KGgo..."]},
        },
        "multipart/form-data": {"schema": {"type": "object", "required": ["faces"], "properties": {
            "faces": {"type": "array", "items": _IMAGE_BODY}}}},
    },
}


class ClientGone(ClientDisconnect):
    """The client closed the connection before its request was served: nobody is left to answer,
    and it is no server error (a phone losing signal mid-upload, a client timing out). The one
    argument says when, for the log line."""


def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def load_static() -> dict[str, bytes]:
    root = resources.files("ferkit.serving") / "static"
    return {name: (root / name).read_bytes() for name in STATIC_FILES}


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if declared > limit:
            raise ApiError(413, "upload_too_large",
                           f"the upload is {declared / 2**20:.1f} MB; the server accepts at most "
                           f"{limit / 2**20:.1f} MB (--max-upload-mb)")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "upload_too_large",
                               f"the upload is over the server's limit of {limit / 2**20:.1f} MB "
                               "(--max-upload-mb)")
            chunks.append(chunk)
    except ClientDisconnect:
        of = f" of {length}" if length is not None else ""
        raise ClientGone(f"mid-upload, after {size}{of} bytes") from None
    return b"".join(chunks)


async def _form(request: Request, body: bytes, max_files: int):
    """Parse a multipart body that was already read (and size-checked) into memory."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        return await replay.form(max_files=max_files, max_fields=16)
    except StarletteHTTPException as exc:
        raise ApiError(422, "bad_multipart", f"malformed multipart body: {exc.detail}") from None
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several types
        raise ApiError(422, "bad_multipart",
                       f"malformed multipart body ({exc.__class__.__name__}: {exc})") from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _stack(faces: list[np.ndarray]) -> np.ndarray:
    if not faces:
        return np.zeros((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    return np.stack(faces).astype(np.uint8)


# -- errors ---------------------------------------------------------------------------------------

async def _api_error(request: Request, exc: ApiError):
    return _error(exc.status, exc.code, exc.detail)


async def _ferkit_error(request: Request, exc: FerkitError):
    return _error(422, "bad_input", str(exc))


async def _http_error(request: Request, exc: StarletteHTTPException):
    code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
    return _error(exc.status_code, code, detail, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError):
    return _error(422, "invalid_request", str(exc.errors())[:500])


async def _client_gone(request: Request, exc: ClientDisconnect):
    # One line, not a 500 with tracebacks: a disconnect is routine, and a flood of aborted
    # uploads must not flood the log. Nobody reads the response; uvicorn drops it.
    peer = f"{request.client.host}:{request.client.port}" if request.client else "client"
    log.info("%s %s from %s dropped: the client disconnected %s", request.method,
             request.url.path, peer, str(exc) or "mid-request")
    return Response(status_code=499)  # nginx's "client closed request"; never sent


async def _internal_error(request: Request, exc: Exception):
    log.exception("internal error on %s %s", request.method, request.url.path)
    return _error(500, "internal_error",
                  f"the server failed on this request ({exc.__class__.__name__}); "
                  "it is logged and the server keeps running")


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON {"error": code, "detail": message}, with its HTTP status."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(FerkitError, _ferkit_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _internal_error)


# -- the page and /docs ---------------------------------------------------------------------------

def add_page_routes(app: FastAPI, static: dict[str, bytes]) -> None:
    """/, /app.js, /style.css from `static`, and /docs from app.state.docs_page."""

    def _static(name: str) -> Response:
        return Response(static[name], media_type=STATIC_FILES[name],
                        headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> Response:
        return _static("index.html")

    @app.api_route("/app.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def app_js() -> Response:
        return _static("app.js")

    @app.api_route("/style.css", methods=["GET", "HEAD"], include_in_schema=False)
    async def style_css() -> Response:
        return _static("style.css")

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs(request: Request) -> Response:
        page = for_server(app.state.docs_page, str(request.base_url))
        return Response(page, media_type="text/html; charset=utf-8", headers=DOCS_HEADERS)


# -- the API --------------------------------------------------------------------------------------

@dataclass
class Service:
    """What the API routes share: decoding and detection run in `pool`, at most the gate's
    slots of decodes at once; classification goes through the engine's batcher."""

    engine: Engine
    limits: Limits
    pool: ThreadPoolExecutor
    gate: DecodeGate

    async def in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def decode(self, request: Request, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in the pool once a decode slot is free; skipped if the client left."""
        async with self.gate:
            if await request.is_disconnected():
                raise ClientGone("while its upload waited to be decoded")
            return await self.in_pool(self.gate.counted(fn), *args)

    async def read_photo(self, request: Request) -> DecodedImage:
        """The photo of a /v1/predict or /v1/explain request, decoded (see PREDICT_BODY)."""
        limits = self.limits
        mtype = _media_type(request)
        if mtype == "multipart/form-data":
            body = await _read_body(request, limits.max_upload_bytes)
            form = await _form(request, body, max_files=1)
            part = form.get("image")
            if part is None:
                raise ApiError(422, "missing_image",
                               "multipart body has no field 'image' (send the photo as "
                               "image=@file)")
            if not isinstance(part, UploadFile):
                raise ApiError(422, "missing_image", "field 'image' must be a file, not text")
            check_part_type(part.content_type)
            data = await part.read()
        elif mtype.startswith("image/") or mtype == "application/octet-stream":
            data = await _read_body(request, limits.max_upload_bytes)
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {mtype or '(none)'!r}: send multipart/form-data with "
                           "the photo in field 'image', or the raw bytes as image/jpeg, "
                           "image/png ...")
        return await self.decode(request, decode_image, data, limits)

    async def read_faces(self, request: Request) -> np.ndarray:
        """The (n, 48, 48) faces of a /v1/classify request, decoded (see CLASSIFY_BODY)."""
        limits = self.limits
        mtype = _media_type(request)
        body = await _read_body(request, limits.max_upload_bytes)
        max_n = limits.max_faces_per_classify
        if mtype == "application/json":
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise ApiError(422, "bad_json", f"body is not valid JSON ({exc})") from None
            items = payload.get("faces") if isinstance(payload, dict) else None
            if not isinstance(items, list):
                raise ApiError(422, "missing_faces",
                               "JSON body must be an object with a list 'faces'")
            if len(items) > max_n:
                raise ApiError(413, "too_many_faces",
                               f"{len(items)} faces in one request; the limit is {max_n}")

            def decode_faces() -> np.ndarray:
                return _stack([face_from_json(item, limits, f"faces[{i}]")
                               for i, item in enumerate(items)])
        elif mtype == "multipart/form-data":
            form = await _form(request, body, max_files=max_n + 1)
            parts = form.getlist("faces")
            if len(parts) > max_n:
                raise ApiError(413, "too_many_faces",
                               f"{len(parts)} faces in one request; the limit is {max_n}")
            blobs = []
            for i, part in enumerate(parts):
                if not isinstance(part, UploadFile):
                    raise ApiError(422, "missing_faces", f"faces[{i}] must be a file, not text")
                check_part_type(part.content_type, f"faces[{i}]")
                blobs.append(await part.read())

            def decode_faces() -> np.ndarray:
                return _stack([decode_face(b, limits, f"faces[{i}]") for i, b in enumerate(blobs)])
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {mtype or '(none)'!r}: send application/json "
                           "{\"faces\": [...]} or multipart/form-data with files in field 'faces'")
        return await self.decode(request, decode_faces)

    async def classify(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities of `faces` from the engine's batcher."""
        if self.engine.batcher.enabled:
            # Wait for the micro-batch here, on the event loop, not in a pool thread: any number
            # of requests can then be waiting for (and merged into) the next model run.
            return await asyncio.wrap_future(self.engine.submit(faces))
        return await self.in_pool(self.engine.classify, faces)


def add_api_routes(app: FastAPI, service: Service) -> None:
    """/healthz, /v1/model, /v1/predict, /v1/explain and /v1/classify around `service`."""
    engine = service.engine

    @app.get("/healthz", tags=["service"], summary="Liveness, uptime and batching counters")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": engine.name, **engine.stats(),
                "decoding": service.gate.stats()}

    # HEAD for load balancers; its own route so the schema has one operation id per path+method
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/v1/model", tags=["model"], summary="The loaded model")
    async def model_info() -> dict[str, Any]:
        """Name, architecture, classes, input size, the accuracy recorded in the checkpoint,
        the server's limits, and micro-batching settings and counters."""
        return {**engine.info(), "limits": service.limits.as_dict()}

    @app.post("/v1/predict", tags=["recognition"], openapi_extra={"requestBody": PREDICT_BODY},
              summary="Faces and their expressions in a photo")
    async def predict(request: Request) -> dict[str, Any]:
        """Detect the faces in a photo and recognise each one's expression.

        Returns `{"faces": [{"box": [x, y, w, h], "expression", "score", "probabilities"}],
        "width", "height", "model", "elapsed_ms"}`; boxes are in the photo's pixels (after EXIF
        rotation). 413: upload or pixel count over the limits; 415: not an image content type;
        422: the bytes are not a readable image."""
        start = time.perf_counter()
        image = await service.read_photo(request)
        faces = await service.in_pool(engine.predict, image)
        return {"faces": faces, "width": image.original_size[0], "height": image.original_size[1],
                "model": engine.name, "elapsed_ms": round((time.perf_counter() - start) * 1000, 2)}

    @app.post("/v1/explain", tags=["recognition"], openapi_extra={"requestBody": PREDICT_BODY},
              summary="Why: a saliency map of the expression of each face")
    async def explain(request: Request, method: str = "auto") -> dict[str, Any]:
        """Detect and recognise the faces as /v1/predict does, and for each face show which
        parts of it made the model name its expression.

        Each face of /v1/predict's answer also has `method` (gradcam, or the input gradient
        for models without a usable conv block), `map` (48 rows of 48 numbers in [0, 1] over
        the aligned face) and `image`, a PNG data URL of the aligned face beside its map.
        `method` (query): auto, gradcam, gradient or gradient-x-input. 501: the model is an
        ONNX file, which has no gradients."""
        from ferkit.models.saliency import METHODS

        start = time.perf_counter()
        if method not in METHODS:
            raise ApiError(422, "bad_method",
                           f"method {method!r}: expected one of {', '.join(METHODS)}")
        image = await service.read_photo(request)
        faces = await service.in_pool(engine.explain, image, method)
        return {"faces": faces, "width": image.original_size[0], "height": image.original_size[1],
                "model": engine.name, "elapsed_ms": round((time.perf_counter() - start) * 1000, 2)}

    @app.post("/v1/classify", tags=["recognition"], openapi_extra={"requestBody": CLASSIFY_BODY},
              summary="Expressions of already-cropped faces")
    async def classify(request: Request) -> dict[str, Any]:
        """Classify a batch of face crops as they are (no detection).

        Returns `{"results": [{"expression", "score", "probabilities"}], "model",
        "elapsed_ms"}`, one result per face, in order."""
        start = time.perf_counter()
        faces = await service.read_faces(request)
        if len(faces) == 0:
            raise ApiError(422, "missing_faces", "no faces given")
        probs = await service.classify(faces)
        classes = engine.classes
        results = []
        for row in probs:
            best = int(np.argmax(row))
            results.append({"expression": classes[best], "score": round(float(row[best]), 4),
                            "probabilities": {c: round(float(p), 4)
                                              for c, p in zip(classes, row, strict=True)}})
        return {"results": results, "model": engine.name,
                "elapsed_ms": round((time.perf_counter() - start) * 1000, 2)}

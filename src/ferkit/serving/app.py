"""The FastAPI app: JSON API under /v1, health at /healthz, the web page at /, API docs at /docs.

create_app(engine, limits) builds it around a loaded Engine (the routes are in routes.py, the
/docs page's renderer in docs_page.py); build_from_config(ServeConfig) loads the engine too,
and create_app_from_env() is the factory uvicorn calls in each worker process when `ferkit serve
--workers N` runs more than one.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ferkit.serving.config import ServeConfig
from ferkit.serving.docs_page import docs_page
from ferkit.serving.engine import Engine
from ferkit.serving.limits import DecodeGate, Limits, usable_cpus
from ferkit.serving.routes import (
    Service,
    add_api_routes,
    add_error_handlers,
    add_page_routes,
    load_static,
)
from ferkit.version import __version__

ENV_CONFIG = "FERKIT_SERVE_CONFIG"  # ServeConfig.to_json() for worker processes


def create_app(engine: Engine, limits: Limits | None = None, *, threads: int | None = None,
               decode_slots: int | None = None) -> FastAPI:
    """The app around a loaded engine. `threads`: worker threads for decoding and detection;
    `decode_slots`: uploads decoded at once (default: one per usable CPU, at most `threads`)."""
    limits = limits or Limits()
    static = load_static()
    threads = threads or min(8, (os.cpu_count() or 2) + 2)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ferkit-infer")
    gate = DecodeGate(decode_slots or min(threads, usable_cpus()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)
        engine.close()

    app = FastAPI(
        title="ferkit",
        version=__version__,
        summary="Facial expression recognition: faces, boxes and expression probabilities.",
        description="Find the faces in a photo and recognise their expressions "
                    f"({', '.join(engine.classes)}), or classify already-cropped faces. "
                    "The web page at / uses this API, with live webcam recognition.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc come from a CDN: /docs works offline
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.limits = limits
    add_error_handlers(app)
    add_page_routes(app, static)
    add_api_routes(app, Service(engine, limits, pool, gate))
    app.state.docs_page = docs_page(app.openapi())
    return app


def build_from_config(config: ServeConfig) -> FastAPI:
    """Load the engine and build the app: `ferkit serve`'s one process, or each worker's."""
    return create_app(Engine.from_config(config), Limits.from_config(config),
                      threads=config.threads or None, decode_slots=config.decode_slots or None)


def create_app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the config comes in $FERKIT_SERVE_CONFIG (JSON)."""
    return build_from_config(ServeConfig.from_json(os.environ.get(ENV_CONFIG, "")))

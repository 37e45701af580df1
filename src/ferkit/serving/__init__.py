"""ferkit serving: `ferkit serve`, the HTTP API and the web page (pip install 'ferkit[serve]').

- app.py: the FastAPI app (create_app) and its routes: /v1/predict, /v1/classify, /v1/model,
  /healthz, the page at /, the OpenAPI schema at /openapi.json and a plain (offline) /docs;
- engine.py: the model, loaded once per process, with detection in worker threads;
- batching.py: the micro-batcher that merges concurrent requests' faces into one model run;
- limits.py: upload decoding (bounded by DecodeGate) and the limits that give 413 / 415 / 422;
- process.py: run `ferkit serve` as a child process on a free port (tests, benchmarks);
- static/: the page (plain HTML, JS and CSS; no build step).

Only app.py imports FastAPI, so the rest can be used (and tested) without the extra.
"""

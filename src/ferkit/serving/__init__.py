"""ferkit serving: `ferkit serve`, the HTTP API and the web page (pip install 'ferkit[serve]').

- config.py: ServeConfig, every setting of a server process (its fields make the CLI options);
- app.py: the FastAPI app factory (create_app, build_from_config, the workers' factory);
- routes.py: the routes: /v1/predict, /v1/explain, /v1/classify, /v1/model, /healthz, the page
  at / and /docs, and the JSON errors;
- docs_page.py: /docs, a plain (offline) page rendered from the OpenAPI schema;
- engine.py: the model, loaded once per process, with detection in worker threads;
- batching.py: the micro-batcher that merges concurrent requests' faces into one model run;
- limits.py: upload decoding (bounded by DecodeGate) and the limits that give 413 / 415 / 422;
- process.py: run `ferkit serve` as a child process on a free port (tests, benchmarks);
- static/: the page (plain HTML, JS and CSS; no build step).

Only app.py and routes.py import FastAPI, so the rest can be used (and tested) without the
extra.
"""

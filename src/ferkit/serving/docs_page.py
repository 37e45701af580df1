"""/docs: the API reference as one self-contained HTML page, rendered from the OpenAPI schema.

Not FastAPI's Swagger UI or ReDoc: those load their scripts from a CDN and show nothing
offline. The page is rendered once per process (`docs_page`); each request only puts in the
address the client used (`for_server`), and DOCS_HEADERS let it load nothing at all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import Any

DOCS_STYLE = ("body{font:15px/1.5 system-ui,sans-serif;max-width:54rem;margin:2rem auto;"
              "padding:0 1rem;color:#1d2330;background:#fff}"
              "code,pre{font:13px/1.45 ui-monospace,Menlo,Consolas,monospace;background:#eef0f4;"
              "border-radius:4px}code{padding:0 .25em}pre{padding:.6rem .8rem;overflow-x:auto}"
              "h2{margin:2.2rem 0 .4rem;font-size:1.1rem}.m{color:#8a4b00;margin-right:.4rem}"
              "dt{font-weight:600}dd{margin:0 0 .4rem 1.2rem}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(DOCS_STYLE.encode()).digest()).decode()
DOCS_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Nothing is loaded from anywhere, this server included: the page is one HTML document.
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}
SERVER_PLACEHOLDER = "$SERVER"  # in the examples; replaced by the address the client used
DOCS_EXAMPLES = {
    ("post", "/v1/predict"): "curl -F image=@photo.jpg {s}/v1/predict\n"
                             "curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg "
                             "{s}/v1/predict",
    ("post", "/v1/explain"): "curl -F image=@photo.jpg '{s}/v1/explain?method=gradcam'",
    ("post", "/v1/classify"): "curl -F faces=@face1.png -F faces=@face2.png {s}/v1/classify\n"
                              "curl -H 'Content-Type: application/json' "
                              "-d '{{\"faces\": [\"<base64 PNG>\"]}}' {s}/v1/classify",
    ("get", "/v1/model"): "curl {s}/v1/model",
    ("get", "/healthz"): "curl {s}/healthz",
}


def _text(markdown: str) -> str:
    """Docstring text -> HTML paragraphs, `code` kept as code; everything else escaped."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", markdown or "") if p.strip()]
    out = []
    for p in paragraphs:
        escaped = html.escape(" ".join(p.split()))
        out.append("<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped) + "</p>")
    return "\n".join(out)


def docs_page(spec: dict[str, Any]) -> str:
    """The HTML of /docs from the OpenAPI schema, with SERVER_PLACEHOLDER in the examples."""
    info = spec.get("info", {})
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(info.get('title', 'API'))} API</title>",
        f"<style>{DOCS_STYLE}</style></head><body>",
        f"<h1>{e(info.get('title', 'API'))} API <small>{e(str(info.get('version', '')))}</small>"
        "</h1>",
        _text(info.get("summary", "")),
        _text(info.get("description", "")),
        '<p>The machine-readable OpenAPI schema is at <a href="openapi.json">/openapi.json</a>: '
        "open it in any OpenAPI tool (Swagger UI, Postman, an API client generator). This page "
        "needs no network access; the interactive Swagger UI is not served because it loads "
        "from a CDN. The web page is at <a href=\"./\">/</a>.</p>",
        "<p>Errors are JSON <code>{\"error\": code, \"detail\": message}</code> with the HTTP "
        "status: 413 over a limit, 415 not an image, 422 unreadable input.</p>",
    ]
    toc, sections = [], []
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if method == "head" and "get" in ops:
                continue  # the same route as GET
            anchor = re.sub(r"[^a-z0-9]+", "-", f"{method}{path}".lower()).strip("-")
            title = f'<span class="m">{e(method.upper())}</span><code>{e(path)}</code>'
            toc.append(f'<li><a href="#{anchor}">{title}</a> {e(op.get("summary", ""))}</li>')
            body = [f'<section id="{anchor}"><h2>{title} {e(op.get("summary", ""))}</h2>',
                    _text(op.get("description", ""))]
            request = op.get("requestBody") or {}
            if request.get("content"):
                types = ", ".join(f"<code>{e(t)}</code>" for t in request["content"])
                body.append(f"<p><strong>Request body</strong>: {types}.</p>")
                body.append(_text(request.get("description", "")))
            responses = op.get("responses") or {}
            if responses:
                body.append("<dl>" + "".join(
                    f"<dt>{e(str(code))}</dt><dd>{e(r.get('description', ''))}</dd>"
                    for code, r in responses.items()) + "</dl>")
            example = DOCS_EXAMPLES.get((method, path))
            if example:
                body.append(f"<pre>{e(example.format(s=SERVER_PLACEHOLDER))}</pre>")
            sections.append("\n".join(body) + "</section>")
    parts += ["<h2>Endpoints</h2>", "<ul>", *toc, "</ul>", *sections, "</body></html>"]
    return "\n".join(p for p in parts if p)


def for_server(page: str, base_url: str) -> str:
    """The rendered page with its examples addressed to `base_url` (the one the client used)."""
    return page.replace(SERVER_PLACEHOLDER, html.escape(base_url.rstrip("/")))

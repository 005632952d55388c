"""HTTP API for a trained run or an exported bundle: FastAPI app + uvicorn.

  POST /predict  {"texts": ["...", ...], "top_k": 3}   (pair models: [["a", "b"], ...])
  GET  /health   liveness and counters          GET /labels   task, labels, pair
  GET  /docs, /redoc, /openapi.json   OpenAPI (FastAPI)               GET /   a small web page

With --token every path but /health needs `Authorization: Bearer TOKEN` (compared in constant time).
Every /predict body passes inference/guard.py first (Content-Type, size while streaming, body deadline,
JSON parsed and validated off the event loop, per-text checks); uvicorn runs with a header deadline, a
keep-alive timeout and a connection limit. Error bodies are short JSON and never echo the request.

Concurrent requests are micro-batched: the model runs on the queued requests' texts (up to `max_batch`
texts and about `max_batch_tokens` tokens per call) in a worker thread (the event loop stays free), and each
request gets its own slice. Large requests are split over several calls, taking texts from every waiting
request in turn, so a small request does not wait for a whole large one. By default a lone request is not
held back waiting for company (`max_wait_ms=0`: measured on 2 cores, waiting 5 ms raised the single-request
round trip from 6-9 ms to ~14 ms and did not raise throughput under load). Shutdown drains the queue before
the process exits. A text's answer does not depend on its batch neighbours (fp32 and static int8 bundles;
dynamic int8 bundles run one text per model call, inference/onnx.py).
"""
from __future__ import annotations

import asyncio
import hmac
import html
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Union

from ..errors import ConfigError, TrickLabError
from .guard import Limits, Parser, Rejected, bounded, check_content_type, guarded_http, read_body

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class PredictRequest(BaseModel):
        texts: list[Union[str, list[str]]] = Field(
            ..., description="texts to classify; for pair models [[text_a, text_b], ...]",
            examples=[["some text", "another text"]])
        top_k: int = Field(1, ge=1, le=1000, description="how many labels (with probabilities) to return")

    # the body is read and checked by inference/guard.py (streamed, bounded, off the event loop); the schema
    # is still published for /docs
    PREDICT_SCHEMA = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}}
except ImportError:  # create_app/serve turn this into an actionable error
    FastAPI = None  # type: ignore[assignment,misc]

PredictFn = Callable[[list, int], list[dict[str, Any]]]


@dataclass
class _Job:
    texts: list
    top_k: int
    future: asyncio.Future = field(repr=False)
    costs: list[int] = field(default_factory=list)
    sent: int = 0                                          # texts handed to the model so far
    results: list = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.sent < len(self.texts) and not self.future.done()


Cost = Callable[[Any], int]


class Batcher:
    """Collects concurrent requests into model calls of at most `max_batch` texts and about `max_tokens`
    tokens (estimated by `cost`; a call always takes at least one text). The model runs in one worker thread,
    one call at a time; requests queue up, and batch, while it is busy. A large request is split over several
    calls, and each call takes texts from every waiting request in turn, so a small request that arrives
    behind a maximal one is answered after about one call, not after the whole large request.
    `max_wait_ms`: how long the first request of an idle server waits for company (0 = none)."""

    def __init__(self, predict: PredictFn, max_batch: int = 64, max_wait_ms: float = 0.0,
                 max_tokens: int | None = None, cost: Cost | None = None):
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.max_tokens, self.cost = max_tokens, cost or (lambda t: 1)
        self.requests = self.batches = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tricklab-model")
        self._closed = False

    def _ensure_started(self) -> None:
        if self._task is None:  # lazily, inside the serving event loop
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, texts: list, top_k: int) -> list[dict[str, Any]]:
        if self._closed:
            raise TrickLabError("the server is shutting down")
        self._ensure_started()
        job = _Job(texts, top_k, asyncio.get_running_loop().create_future(), [self.cost(t) for t in texts])
        self.requests += 1
        await self._queue.put(job)
        return await job.future

    async def close(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._closed = True
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        self._pool.shutdown(wait=True)

    async def _run(self) -> None:
        active: list[_Job] = []
        stopping = False
        while True:
            active = [j for j in active if j.open]
            if not active:
                if stopping:
                    return
                first = await self._queue.get()
                if first is None:
                    return
                active.append(first)
                stopping = await self._gather(active, wait=self.max_wait)
            else:
                stopping = await self._gather(active, wait=0.0) or stopping
            await self._process(self._take(active))

    async def _gather(self, active: list[_Job], wait: float) -> bool:
        """Move every queued request into `active` (and, while fewer than max_batch texts wait, those arriving
        within `wait` s); True once the stop mark is seen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0 or sum(len(j.texts) - j.sent for j in active) >= self.max_batch:
                    return False
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    return False
            if job is None:
                return True
            active.append(job)

    def _take(self, active: list[_Job]) -> list[tuple[_Job, int, int]]:
        """One model call: texts from each open request in turn (round robin) within the text and token budget."""
        start = {id(j): j.sent for j in active}
        n = used = 0
        progress = True
        while progress and n < self.max_batch:
            progress = False
            for j in active:
                if not j.open or n >= self.max_batch:
                    continue
                c = j.costs[j.sent]
                if n and self.max_tokens is not None and used + c > self.max_tokens:
                    continue
                j.sent, n, used, progress = j.sent + 1, n + 1, used + c, True
        return [(j, start[id(j)], j.sent) for j in active if j.sent > start[id(j)]]

    async def _process(self, parts: list[tuple[_Job, int, int]]) -> None:
        loop = asyncio.get_running_loop()
        self.batches += 1
        texts = [t for j, a, b in parts for t in j.texts[a:b]]
        try:
            results = await loop.run_in_executor(self._pool, self.predict, texts, max(j.top_k for j, _, _ in parts))
        except Exception:  # isolate the failing request: run each part on its own
            for j, a, b in parts:
                try:
                    _deliver(j, await loop.run_in_executor(self._pool, self.predict, j.texts[a:b], j.top_k))
                except Exception as e:  # noqa: BLE001  (handed to that request)
                    _settle(j, None, e)
            return
        i = 0
        for j, a, b in parts:
            _deliver(j, results[i:i + b - a])
            i += b - a


def _deliver(job: _Job, results: list[dict[str, Any]]) -> None:
    job.results += [dict(r, top_k=r["top_k"][: job.top_k]) if "top_k" in r else r for r in results]
    if len(job.results) == len(job.texts):
        _settle(job, job.results, None)


def _settle(job: _Job, result: Any, error: BaseException | None) -> None:
    if job.future.done():  # the client went away
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)


def _error(status: int, message: str, close: bool = False) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if close:  # the body may be unread: do not keep the connection
        headers["Connection"] = "close"
    return JSONResponse({"error": bounded(message)}, status_code=status, headers=headers or None)


def check_token(token: str | None) -> None:
    if token is not None and (not token.strip() or token != token.strip() or any(c.isspace() for c in token)):
        raise ConfigError("--token (or $TRICKLAB_TOKEN) is empty or contains whitespace: give a non-empty secret "
                          "without spaces, or leave it out (and unset TRICKLAB_TOKEN) to serve without a token")


def token_cap(meta: dict[str, Any]) -> int:
    """The most tokens one text can cost: max_length, times the windows of the chunk policy."""
    data = meta.get("data") or {}
    length = int(data.get("max_length") or 512)
    trunc = data.get("truncation") or {}
    return length * int(trunc.get("max_chunks") or 8) if trunc.get("policy") == "chunk" else length


def create_app(predictor: Any, name: str = "model", token: str | None = None, max_texts: int = 256,
               max_chars: int = 2000, max_batch: int = 64, max_wait_ms: float = 0.0,
               max_batch_tokens: int | None = 8192, body_timeout: float = 30.0,
               log: Callable[[str], None] | None = None) -> Any:
    """The FastAPI app around a Predictor (torch or ONNX backend). With a token, every path but /health needs it."""
    if FastAPI is None:
        raise TrickLabError("serving needs fastapi and uvicorn; fix: pip install 'tricklab[serve]'")
    check_token(token)
    limits = Limits(max_texts, max_chars, bool(predictor.meta["data"].get("pair")), body_timeout)
    labels = list(predictor.labels)
    cap = token_cap(predictor.meta)
    batcher = Batcher(lambda texts, k: predictor.predict(texts, top_k=k), max_batch, max_wait_ms, max_batch_tokens,
                      cost=lambda t: min(cap, 3 + (len(t) if isinstance(t, str) else sum(map(len, t)))))
    parser = Parser(limits)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await batcher.close()  # uvicorn has stopped taking requests; finish the queued ones
        parser.close()
        if log:
            log(f"stopped: served {batcher.requests} requests in {batcher.batches} model calls")

    app = FastAPI(title=f"tricklab: {name}", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=html.escape(f"{predictor.task} classifier, labels: {', '.join(labels)}"))
    app.state.batcher = batcher
    _add_guards(app, token)

    @app.post("/predict", openapi_extra=PREDICT_SCHEMA)
    async def predict(request: Request) -> Any:
        """Labels and probabilities for each text, in input order."""
        try:
            check_content_type(request.headers)
            body = await read_body(request, limits)
            texts, top_k = await parser.parse(body)
        except Rejected as e:
            return _error(e.status, e.message, e.close)
        try:
            return {"predictions": await batcher.submit(texts, top_k)}
        except TrickLabError as e:
            return _error(503 if "shutting down" in str(e) else 422, str(e))
        except Exception as e:  # noqa: BLE001  (one request's failure; the server goes on)
            if log:
                log(f"error: a /predict request failed in the model: {type(e).__name__}: {bounded(str(e))}")
            return _error(500, "the model failed on this request (logged on the server)")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness; the request and batch counters show the micro-batching at work."""
        return {"status": "ok", "model": name, "backend": predictor.backend, "task": predictor.task,
                "requests": batcher.requests, "batches": batcher.batches}

    @app.get("/labels")
    async def get_labels() -> dict[str, Any]:
        return {"model": name, "task": predictor.task, "pair": limits.pair, "labels": labels}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__TITLE__", html.escape(name)))

    _add_docs(app, name)
    return app


DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def docs_assets() -> Path | None:
    """The Swagger UI / ReDoc files packaged by fastapi-offline (MIT; Swagger UI Apache-2.0, ReDoc MIT), so /docs
    works without internet; None without it (the pages then load them from FastAPI's default CDN)."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / f).is_file() for f in DOCS_FILES) else None


def _add_docs(app: Any, name: str) -> None:
    """/docs (Swagger UI) and /redoc, from local files when fastapi-offline is installed (/docs-assets/...)."""
    from fastapi.responses import FileResponse

    title = html.escape(f"tricklab: {name}")
    assets = docs_assets()
    local = {} if assets is None else {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
                                       "swagger_css_url": "/docs-assets/swagger-ui.css",
                                       "swagger_favicon_url": "/docs-assets/favicon.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=title, **local)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        extra = {} if assets is None else {"redoc_js_url": "/docs-assets/redoc.standalone.js",
                                           "redoc_favicon_url": "/docs-assets/favicon.png", "with_google_fonts": False}
        return get_redoc_html(openapi_url="/openapi.json", title=title, **extra)

    @app.get("/docs-assets/{file}", include_in_schema=False)
    async def docs_asset(file: str) -> Any:
        if assets is None or file not in DOCS_FILES:
            return _error(404, f"no such file: /docs-assets/{bounded(file)}")
        return FileResponse(assets / file, headers={"Cache-Control": "max-age=86400"})


def _add_guards(app: Any, token: str | None) -> None:
    """Token on every path but /health; bounded JSON errors for what the routes do not handle themselves."""

    app.add_middleware(TokenGuard, token=token)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:3])
        return _error(422, f"bad request: {where}")


class TokenGuard:
    """ASGI middleware: with a token, every HTTP path but /health needs `Authorization: Bearer TOKEN`
    (compared with hmac.compare_digest), checked before anything of the request body is read."""

    def __init__(self, app: Any, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.token is not None and scope["type"] == "http" and scope["path"] != "/health":
            given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
            scheme, _, value = given.partition(" ")
            value = value.strip()
            if scheme.lower() != "bearer" or not value or not hmac.compare_digest(value.encode(), self.token.encode()):
                answer = _error(401, f"{'wrong' if given else 'missing'} bearer token: send the header "
                                     f"`Authorization: Bearer TOKEN` (the server's --token)", close=True)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def load_predictor(run: str | None, bundle: str | None, threads: int | None = None, **options: Any) -> tuple[Any, str]:
    """(Predictor, display name) from a run folder or a bundle folder; `options`: Predictor arguments
    (threshold, min_k, max_k, abstain_below)."""
    from .predictor import Predictor

    if bool(run) == bool(bundle):
        raise ConfigError("give exactly one of --run RUN_DIR or --bundle BUNDLE_DIR")
    if bundle:
        info = Path(bundle) / "bundle.json"
        name = json.loads(info.read_text(encoding="utf-8")).get("name") if info.is_file() else None
        return Predictor.from_bundle(bundle, threads=threads, **options), name or Path(bundle).resolve().name
    return Predictor.from_run(run, threads=threads, **options), Path(run).resolve().name


def serve(run: str | None = None, bundle: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, max_texts: int = 256, max_chars: int = 2000, threads: int | None = None,
          options: dict[str, Any] | None = None, max_connections: int = 128, header_timeout: float = 10.0,
          body_timeout: float = 30.0, max_batch_tokens: int = 8192) -> None:
    """Load the model and serve it with uvicorn until SIGINT/SIGTERM. `options`: Predictor arguments
    (threshold, min_k, max_k, abstain_below), applied to every request."""
    try:
        import uvicorn
    except ImportError:
        raise TrickLabError("serving needs fastapi and uvicorn; fix: pip install 'tricklab[serve]'") from None
    check_token(token)
    for flag, v in (("--max-texts", max_texts), ("--max-chars", max_chars), ("--max-connections", max_connections),
                    ("--max-batch-tokens", max_batch_tokens), ("--header-timeout", header_timeout),
                    ("--body-timeout", body_timeout)):
        if v <= 0:
            raise ConfigError(f"{flag} {v}: must be positive")
    predictor, name = load_predictor(run, bundle, threads, **(options or {}))
    app = create_app(predictor, name, token, max_texts, max_chars, max_batch_tokens=max_batch_tokens,
                     body_timeout=body_timeout, log=lambda m: print(m, file=sys.stderr))
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"warning: serving on {host} without --token: anyone who can reach this port can use the model",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {name} ({predictor.backend}, {predictor.task}) on http://{shown}:{port}/  (API docs: /docs)",
          file=sys.stderr)
    try:
        uvicorn.Server(uvicorn_config(app, host, port, max_connections, header_timeout)).run()
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT after its graceful shutdown (the queue is drained)
        pass


def uvicorn_config(app: Any, host: str = "127.0.0.1", port: int = 8000, max_connections: int = 128,
                   header_timeout: float = 10.0, keep_alive: int = 5) -> Any:
    """How `tricklab serve` runs uvicorn: request headers within `header_timeout` s (guard.guarded_http), idle
    kept-alive connections closed after `keep_alive` s, at most `max_connections` (then 503)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30,
                          http=guarded_http(header_timeout), timeout_keep_alive=keep_alive,
                          limit_concurrency=max_connections)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>__TITLE__ - tricklab</title>
<style>
 body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
 h1{font-size:1.4rem;margin-bottom:.2rem} #meta{color:#666;margin-bottom:1rem}
 textarea{width:100%;box-sizing:border-box;min-height:5rem;font:inherit;padding:.5rem}
 button{font:inherit;padding:.4rem 1.2rem;margin:.5rem 0;cursor:pointer}
 .row{display:flex;align-items:center;gap:.6rem;margin:.25rem 0}
 .label{width:10rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
 .bar{flex:1;background:#eee;height:1rem;border-radius:3px}
 .fill{background:#3b7dd8;height:100%;border-radius:3px}
 .prob{width:4.5rem;text-align:right;font-variant-numeric:tabular-nums}
 #error{color:#b00020} .hidden{display:none}
</style></head><body>
<h1 id="model">__TITLE__</h1>
<div id="meta">loading labels...</div>
<div id="auth" class="hidden"><input id="token" type="password" placeholder="access token" size="30"></div>
<textarea id="text" placeholder="Text to classify"></textarea>
<textarea id="text_b" class="hidden" placeholder="Second text of the pair"></textarea>
<div><button id="predict">Predict</button> <label>top <input id="k" type="number" min="1" value="5" style="width:3.5rem"></label></div>
<div id="error"></div>
<div id="top" class="hidden">Top label: <b id="top-label"></b></div>
<div id="results"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;
function headers() {
  const h = {"Content-Type": "application/json"};
  const t = $("token").value.trim();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}
async function call(url, body) {
  const r = await fetch(url, body === undefined ? {headers: headers()} : {method: "POST", headers: headers(), body: JSON.stringify(body)});
  const data = await r.json().catch(() => ({error: "HTTP " + r.status}));
  if (r.status === 401) $("auth").classList.remove("hidden");
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}
async function loadLabels() {
  try {
    info = await call("/labels");
    $("meta").textContent = info.task.replace("_", "-") + " · " + info.labels.length + " labels: " + info.labels.join(", ");
    if (info.pair) $("text_b").classList.remove("hidden");
    $("error").textContent = "";
  } catch (e) { $("meta").textContent = ""; $("error").textContent = e.message; }
}
function bar(label, p) {
  const row = document.createElement("div"); row.className = "row";
  const l = document.createElement("span"); l.className = "label"; l.textContent = label; l.title = label;
  const b = document.createElement("div"); b.className = "bar";
  const f = document.createElement("div"); f.className = "fill"; f.style.width = (Math.max(0, Math.min(1, p)) * 100).toFixed(1) + "%";
  b.appendChild(f);
  const v = document.createElement("span"); v.className = "prob"; v.textContent = p.toFixed(4);
  row.append(l, b, v); return row;
}
async function predict() {
  $("error").textContent = ""; $("results").replaceChildren(); $("top").classList.add("hidden");
  if (!info) await loadLabels();
  const a = $("text").value;
  const text = info && info.pair ? [a, $("text_b").value] : a;
  try {
    const data = await call("/predict", {texts: [text], top_k: Math.max(1, parseInt($("k").value) || 1)});
    const p = data.predictions[0];
    if (p.top_k) {
      $("top-label").textContent = p.uncertain ? "(uncertain: below the abstention threshold)"
        : p.label !== undefined ? p.label : (p.labels.length ? p.labels.join(", ") : "(none above threshold)");
      for (const [label, prob] of p.top_k) $("results").appendChild(bar(label, prob));
    } else {
      $("top-label").textContent = p.score.toFixed(4);
    }
    $("top").classList.remove("hidden");
  } catch (e) { $("error").textContent = e.message; }
}
$("predict").addEventListener("click", predict);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predict(); });
$("token").addEventListener("change", loadLabels);
loadLabels();
</script></body></html>
"""

"""HTTP serving on a tiny random BERT: bad requests (status + JSON body), token, /health, /labels,
micro-batched concurrent requests equal single requests, draining on shutdown, `tricklab serve`
with SIGTERM, and the web page driven by headless Chromium (skipped when Chromium is missing)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="serving needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serving tests need httpx")

from conftest import tiny_cfg, write_thucnews  # noqa: E402
from tricklab.inference import Predictor  # noqa: E402
from tricklab.errors import ConfigError  # noqa: E402
from tricklab.inference.serve import Batcher, create_app, uvicorn_config  # noqa: E402
from tricklab.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
TEXTS = ["球赛冠军队员", "股市银行基金利率", "玩家游戏版本电竞", "的了在是", "球赛股市", "银行"]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serve")
    train(tiny_cfg(tiny_model, "train.epochs=4"), write_thucnews(d / "thuc"), out=d / "run", progress=False)
    return d / "run"


@pytest.fixture(scope="module")
def predictor(run) -> Predictor:
    return Predictor.from_run(run)


@pytest.fixture
def client(predictor):
    from fastapi.testclient import TestClient

    app = create_app(predictor, "tiny", token=TOKEN, max_texts=8, max_chars=50)
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def test_predict_ok(client, predictor):
    r = client.post("/predict", json={"texts": TEXTS[:3], "top_k": 2})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = predictor.predict(TEXTS[:3], top_k=2)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert all(len(g["top_k"]) == 2 for g in got)
    assert got[0]["score"] == pytest.approx(want[0]["score"], abs=1e-5)


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"texts": "one text"}', 422, "texts"),
    (b'{"texts": [1, 2]}', 422, "texts[0]"),
    (b'{"texts": ["a"], "top_k": "many"}', 422, "top_k"),
    (b'{"texts": ["a"], "top_k": 0}', 422, "top_k"),
    (b'{"top_k": 1}', 422, "Field required"),
    (b'{"texts": []}', 422, "empty"),
    (b'{"texts": [["a", "b"]]}', 422, "single texts"),
    ('{"texts": ["' + "球" * 51 + '"]}', 413, "at most 50"),
    (json.dumps({"texts": ["a"] * 9}), 413, "at most 8"),
    (json.dumps({"texts": ["a" * 10_000] * 9}), 413, "too large"),
])
def test_bad_requests(client, body, status, says):
    r = client.post("/predict", content=body if isinstance(body, bytes) else body.encode(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert says in r.json()["error"]


@pytest.mark.parametrize("header, says", [(None, "missing"), ("Bearer nope", "wrong"), (f"Basic {TOKEN}", "wrong")])
def test_token_required(client, header, says):
    headers = {"Authorization": header} if header else {}
    client.headers.pop("Authorization")
    for r in (client.post("/predict", json={"texts": ["a"]}, headers=headers), client.get("/labels", headers=headers)):
        assert r.status_code == 401 and says in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/health").status_code == 200  # liveness probes need no token


def test_health_labels_docs_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny" and h["backend"] == "torch" and h["task"] == "single_label"
    assert client.get("/labels").json() == {"model": "tiny", "task": "single_label", "pair": False,
                                            "labels": ["sports", "finance", "game"]}
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="predict"' in page.text and "<title>tiny" in page.text and "http" not in page.text.split("<script>")[1]


def test_concurrent_requests_are_batched_and_match_single_answers(predictor):
    app = create_app(predictor, "tiny", max_wait_ms=50)
    jobs = [{"texts": [TEXTS[i % len(TEXTS)]] + ([TEXTS[(i + 1) % len(TEXTS)]] if i % 2 else []), "top_k": 1 + i % 3}
            for i in range(16)]

    async def go() -> tuple[list[Any], list[Any], dict]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            together = await asyncio.gather(*(c.post("/predict", json=j) for j in jobs))
            health = (await c.get("/health")).json()
            alone = [await c.post("/predict", json=j) for j in jobs]
        await app.state.batcher.close()
        return together, alone, health

    together, alone, health = asyncio.run(go())
    assert health["requests"] == 16 and health["batches"] < 16, health  # micro-batched
    for j, a, b in zip(jobs, together, alone):
        pa, pb = a.json()["predictions"], b.json()["predictions"]
        assert len(pa) == len(j["texts"]) and [x["label"] for x in pa] == [x["label"] for x in pb]
        assert all(len(x["top_k"]) == j["top_k"] for x in pa)
        for x, y in zip(pa, pb):
            assert x["score"] == pytest.approx(y["score"], abs=1e-5)


class FakePair:
    """A predictor stand-in: pair single-label model that records its calls."""

    backend, task, labels = "fake", "single_label", ["same", "diff"]
    meta = {"data": {"pair": True}}

    def __init__(self, delay: float = 0.0):
        self.calls: list[int] = []
        self.delay = delay

    def predict(self, texts: list, top_k: int = 1) -> list[dict]:
        time.sleep(self.delay)
        self.calls.append(len(texts))
        for t in texts:
            if not (isinstance(t, tuple) and len(t) == 2):
                raise ValueError(f"not a pair: {t!r}")
        return [{"label": "same", "score": 0.9, "top_k": [["same", 0.9], ["diff", 0.1]][:top_k]} for _ in texts]


def test_pair_requests():
    from fastapi.testclient import TestClient

    with TestClient(create_app(FakePair(), "pairs")) as c:
        r = c.post("/predict", json={"texts": [["a", "b"], "c\td"], "top_k": 2})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        r = c.post("/predict", json={"texts": ["only one"]})
        assert r.status_code == 422 and "[text_a, text_b]" in r.json()["error"]
        assert c.get("/labels").json()["pair"] is True


def test_batcher_drains_on_close():
    fake = FakePair(delay=0.05)
    b = Batcher(fake.predict, max_batch=4, max_wait_ms=1)

    async def go() -> list:
        tasks = [asyncio.ensure_future(b.submit([("a", "b")] * 2, 1)) for _ in range(6)]
        await asyncio.sleep(0.01)
        await b.close()  # queued requests still get their answers
        return await asyncio.gather(*tasks)

    results = asyncio.run(go())
    assert len(results) == 6 and all(len(r) == 2 for r in results)
    assert sum(fake.calls) == 12 and max(fake.calls) <= 4


def test_failing_request_does_not_fail_its_batch_neighbours():
    fake = FakePair()
    b = Batcher(fake.predict, max_batch=64, max_wait_ms=20)

    async def go() -> list:
        res = await asyncio.gather(b.submit([("a", "b")], 1), b.submit(["bad"], 1), return_exceptions=True)
        await b.close()
        return res

    good, bad = asyncio.run(go())
    assert len(good) == 1 and isinstance(bad, ValueError)


def test_batcher_runs_a_lone_request_at_once_and_batches_what_queues_meanwhile():
    """Default max_wait_ms=0: the model starts on the first request without waiting for company; the
    requests that arrive while it is busy go together into the next call (no timing assertions)."""
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def predict(texts: list, top_k: int) -> list[dict]:
        calls.append(len(texts))
        if len(calls) == 1:
            entered.set()
            release.wait(30)
        return [{"label": t, "score": 1.0, "top_k": [[t, 1.0]]} for t in texts]

    b = Batcher(predict)
    assert b.max_wait == 0

    async def go() -> list:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(b.submit(["a"], 1))
        assert await loop.run_in_executor(None, entered.wait, 30)  # the model runs on the lone request
        rest = [asyncio.ensure_future(b.submit([t], 1)) for t in "bcde"]
        await asyncio.sleep(0)  # they queue while the model is busy
        release.set()
        out = await asyncio.gather(first, *rest)
        await b.close()
        return out

    out = asyncio.run(go())
    assert calls == [1, 4]
    assert [r[0]["label"] for r in out] == list("abcde")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up in {timeout}s")


def test_cli_serve_bundle_with_token_and_sigterm(run, tmp_path):
    pytest.importorskip("onnxruntime")
    from tricklab.inference.export import export_bundle

    export_bundle(run, tmp_path / "b", log=None)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "tricklab.cli", "serve", "--bundle", str(tmp_path / "b"),
                             "--port", str(port), "--token", TOKEN, "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, proc)
        assert httpx.get(url + "/health").json()["backend"] == "onnx"
        assert httpx.post(url + "/predict", json={"texts": ["球赛"]}).status_code == 401
        r = httpx.post(url + "/predict", json={"texts": TEXTS, "top_k": 2}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        want = Predictor.from_run(run).predict(TEXTS)
        assert [x["label"] for x in r.json()["predictions"]] == [x["label"] for x in want]
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (so the exit status may say SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "stopped: served 1 requests in 1 model calls" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def live_server(predictor):
    """A real uvicorn server on a free loopback port, in a thread of this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, "tiny-web"), host="127.0.0.1", port=port,
                                          log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    wait_up(url, timeout=30)
    yield url
    server.should_exit = True
    t.join(timeout=30)


CHROMIUM = os.environ.get("TRICKLAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TRICKLAB_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason=f"web page test needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
def test_web_page_in_headless_chromium(live_server, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="web page test needs selenium")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(live_server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "labels:" in d.find_element(By.ID, "meta").text)
        assert driver.find_element(By.ID, "model").text == "tiny-web"
        assert "sports, finance, game" in driver.find_element(By.ID, "meta").text
        text = "股市银行基金利率"
        driver.find_element(By.ID, "text").send_keys(text)
        driver.find_element(By.ID, "predict").click()
        wait.until(lambda d: d.find_element(By.ID, "top-label").text.strip() != "")
        shown = driver.find_element(By.ID, "top-label").text.strip()
        rows = driver.find_elements(By.CSS_SELECTOR, "#results .row")
        api = httpx.post(live_server + "/predict", json={"texts": [text], "top_k": 5}).json()["predictions"][0]
        assert shown == api["label"]
        assert len(rows) == 3 and rows[0].find_element(By.CLASS_NAME, "label").text == api["label"]
        assert float(rows[0].find_element(By.CLASS_NAME, "prob").text) == pytest.approx(api["score"], abs=1e-3)
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


# ---------------------------------------------------------------- hostile and broken input

class FakeSingle:
    """A predictor stand-in: single-text model, instant answers."""

    backend, task, labels = "fake", "single_label", ["a", "b"]
    meta = {"data": {"pair": False, "max_length": 16}}

    def predict(self, texts: list, top_k: int = 1) -> list[dict]:
        return [{"label": "a", "score": 0.9, "top_k": [["a", 0.9], ["b", 0.1]][:top_k]} for _ in texts]


class Live:
    """A real uvicorn server (tricklab serve's own configuration) on a free loopback port, in a thread."""

    def __init__(self, app: Any, http: Any = None, **cfg: Any):
        import uvicorn

        self.port = free_port()
        config = uvicorn_config(app, "127.0.0.1", self.port, **cfg)
        if http is not None:        # another protocol class than tricklab serve's default
            config.http = http
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Live":
        self.thread.start()
        wait_up(self.url, timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s


def read_response(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """(status, raw response) of what the server sends within `timeout` s; (0, b"") when the connection was
    closed without an answer. Raises socket.timeout when nothing comes."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:    # a server that closes with our unread bytes pending resets the connection
            chunk = b""
        if not chunk:
            return 0, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    n = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), b"0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split()[1]), head + b"\r\n\r\n" + rest


def test_chunked_body_is_refused_while_it_streams():
    """Transfer-Encoding: chunked has no Content-Length: the limit is enforced on the bytes as they arrive, so the
    server answers 413 before the (never-ending) body is complete."""
    app = create_app(FakeSingle(), "fake", max_texts=8, max_chars=50)   # max body ~6.6 kB
    with Live(app) as srv, srv.connect() as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        s.sendall(b'7\r\n{"texts\r\n')
        chunk = b"a" * 4096
        try:
            for _ in range(8):                           # 32 kB, no terminating 0-chunk
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass        # the server answered and closed before all 32 kB were sent: the behaviour under test
        status, raw = read_response(s, timeout=10)
    assert status == 413 and b"larger than" in raw and len(raw) < 1000


def test_huge_bodies_are_rejected_without_stalling_other_requests():
    """3 MB of a million JSON values (under the default body limit) costs json.loads seconds of GIL time: it is
    parsed outside the server's process, so /health keeps answering meanwhile, and the request gets its 413."""
    app = create_app(FakeSingle(), "fake")                # defaults: 256 texts of 2000 characters
    numbers = b'{"texts": [' + b",".join([b"1"] * 1_500_000) + b"]}"
    lists = b'{"texts": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    assert len(numbers) > 2_900_000 and len(lists) > 2_900_000
    with Live(app) as srv:
        health_ms: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(timeout=60) as c:
                while not done.is_set():
                    t0 = time.perf_counter()
                    assert c.get(srv.url + "/health").status_code == 200
                    health_ms.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.01)

        t = threading.Thread(target=poll)
        t.start()
        try:
            with httpx.Client(timeout=120) as c:
                for body in (numbers, lists, numbers):
                    r = c.post(srv.url + "/predict", content=body, headers={"Content-Type": "application/json"})
                    assert r.status_code == 413 and "at most 256" in r.json()["error"], r.text[:300]
        finally:
            done.set()
            t.join()
    assert len(health_ms) >= 5 and max(health_ms) < 1500, sorted(health_ms)[-5:]


def test_invalid_unicode_is_a_422_for_that_text_and_never_fails_its_batch(predictor):
    app = create_app(predictor, "tiny", max_wait_ms=50)

    async def go() -> tuple[Any, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            bad = b'{"texts": ["\\u7403\\u8d5b", "\\ud800abc"]}'
            res = await asyncio.gather(
                c.post("/predict", content=bad, headers={"Content-Type": "application/json"}),
                c.post("/predict", json={"texts": TEXTS[:2]}))
        await app.state.batcher.close()
        return res

    bad, good = asyncio.run(go())
    assert bad.status_code == 422 and "texts[1]" in bad.json()["error"] and "surrogate" in bad.json()["error"]
    assert good.status_code == 200 and len(good.json()["predictions"]) == 2
    assert app.state.batcher.batches == 1   # the bad request never reached the model


@pytest.mark.parametrize("texts, index", [(["ok", ""], 1), (["   \t\n"], 0), (["ok", "fine", "\u3000"], 2)])
def test_empty_or_whitespace_texts_are_422_naming_the_index(client, texts, index):
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 422 and f"texts[{index}]" in r.json()["error"] and "empty" in r.json()["error"]


def test_pair_with_an_empty_side_is_422():
    from fastapi.testclient import TestClient

    with TestClient(create_app(FakePair(), "pairs")) as c:
        r = c.post("/predict", json={"texts": [["a", "b"], ["c", " "]]})
        assert r.status_code == 422 and "texts[1]" in r.json()["error"]


XSS = '<script>alert("x")</script>'


def test_docs_escape_the_name_and_with_a_token_only_health_is_public():
    from fastapi.testclient import TestClient

    pred = FakeSingle()
    pred.labels = ["<img src=x onerror=alert(1)>", "b"]
    with TestClient(create_app(pred, XSS, token=TOKEN)) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/labels", "/"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert "onerror" not in r.text and "alert" not in r.text
        assert c.get("/health").status_code == 200
        assert c.get("/docs", headers={"Authorization": "Bearer "}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/docs", "/redoc", "/"):
            r = c.get(path, headers=auth)
            assert r.status_code == 200 and XSS not in r.text and "&lt;script&gt;" in r.text, path
        spec = c.get("/openapi.json", headers=auth).json()
        assert "<img" not in spec["info"]["description"] and "/predict" in spec["paths"]


def test_docs_pages_work_offline_from_packaged_assets():
    """/docs and /redoc load Swagger UI / ReDoc from the server itself (fastapi-offline's files), not a CDN."""
    from fastapi.testclient import TestClient

    from tricklab.inference.serve import DOCS_FILES, docs_assets

    assert docs_assets() is not None, "fastapi-offline is in the serve and test extras"
    with TestClient(create_app(FakeSingle(), "tiny", token=TOKEN)) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/docs", "/redoc"):
            page = c.get(path, headers=auth).text
            assert "/docs-assets/" in page and "cdn." not in page and "fonts.googleapis" not in page, path
        for f in DOCS_FILES:
            r = c.get(f"/docs-assets/{f}", headers=auth)
            assert r.status_code == 200 and r.content == (docs_assets() / f).read_bytes(), f
        assert c.get("/docs-assets/swagger-ui.css").status_code == 401          # behind the token like /docs
        assert c.get("/docs-assets/..%2Fcore.py", headers=auth).status_code == 404
        assert c.get("/docs-assets/core.py", headers=auth).status_code == 404


@pytest.mark.parametrize("bad", ["", " ", "two words"])
def test_empty_or_blank_token_is_refused(bad, capsys):
    with pytest.raises(ConfigError, match="empty or contains whitespace"):
        create_app(FakeSingle(), "fake", token=bad)
    from tricklab.cli import main as cli_main

    assert cli_main(["serve", "--bundle", "/nonexistent", "--token", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--token" in err


def test_wrong_content_type_is_415_and_errors_never_echo_the_body(client):
    marker = "ECHO-MARKER-" * 200
    r = client.post("/predict", content=json.dumps({"texts": [marker]}), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    assert "ECHO-MARKER" not in r.text and len(r.content) < 600
    for body in ({"texts": [1, marker]}, {"texts": marker}, {"texts": ["a"], "top_k": marker}, [marker],
                 {"texts": [marker[:50], marker]}):
        r = client.post("/predict", json=body)
        assert 400 <= r.status_code < 500 and "ECHO-MARKER" not in r.text and len(r.content) < 600, r.text[:200]
    r = client.post("/predict", content=b"\xff\xfe" + marker.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "ECHO-MARKER" not in r.text
    r = client.post("/predict", json={"texts": ["a"]}, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_slow_headers_and_slow_bodies_are_timed_out():
    """slowloris: headers that never complete are cut after the header timeout; a body that stalls gets 408."""
    app = create_app(FakeSingle(), "fake", body_timeout=1.0)
    with Live(app, header_timeout=1.0) as srv:
        with srv.connect() as s:
            t0 = time.perf_counter()
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            for _ in range(3):        # a header line every 0.3 s keeps the connection busy, never complete
                time.sleep(0.3)
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    break
            status, _ = read_response(s, timeout=10)
            assert status == 0 and time.perf_counter() - t0 < 5     # closed, without an answer
        with srv.connect() as s:   # a connection that sends nothing at all
            t0 = time.perf_counter()
            assert read_response(s, timeout=10)[0] == 0 and time.perf_counter() - t0 < 5
        with srv.connect() as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"texts\": ")
            t0 = time.perf_counter()
            status, raw = read_response(s, timeout=10)
            assert status == 408 and time.perf_counter() - t0 < 5 and b"did not arrive" in raw
        assert httpx.post(srv.url + "/predict", json={"texts": ["a"]}).status_code == 200  # honest clients still served


def test_connection_limit_answers_503():
    app = create_app(FakeSingle(), "fake")
    with Live(app, max_connections=3) as srv:
        idle = [srv.connect() for _ in range(3)]
        time.sleep(0.2)
        try:
            assert httpx.get(srv.url + "/health").status_code == 503
        finally:
            for s in idle:
                s.close()
        time.sleep(0.2)
        assert httpx.get(srv.url + "/health").status_code == 200


def test_a_small_request_does_not_wait_for_a_whole_large_one():
    """Each model call takes at most max_tokens (estimated) tokens, and texts from every waiting request in turn:
    a small request that queues behind a large one is answered after about one call."""
    calls: list[list[str]] = []
    entered, release = threading.Event(), threading.Event()

    def predict(texts: list, top_k: int) -> list[dict]:
        calls.append(list(texts))
        if len(calls) == 1:
            entered.set()
            release.wait(30)
        return [{"label": t, "score": 1.0, "top_k": [[t, 1.0]]} for t in texts]

    b = Batcher(predict, max_batch=64, max_tokens=400, cost=lambda t: 100)
    big = [f"big{i}" for i in range(40)]

    async def go() -> tuple[list, list, int]:
        loop = asyncio.get_running_loop()
        large = asyncio.ensure_future(b.submit(big, 1))
        assert await loop.run_in_executor(None, entered.wait, 30)
        small = asyncio.ensure_future(b.submit(["small"], 1))
        await asyncio.sleep(0)
        release.set()
        s = await small
        calls_when_small_done = len(calls)
        out = await large, s, calls_when_small_done
        await b.close()
        return out

    large, small, n = asyncio.run(go())
    assert [r["label"] for r in large] == big and small[0]["label"] == "small"
    assert max(len(c) for c in calls) == 4             # 4 x 100 tokens per call
    assert "small" in calls[1] and n <= 3, calls[:3]   # it rode in the second call, not the eleventh

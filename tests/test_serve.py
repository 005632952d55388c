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
from tricklab.inference.serve import Batcher, create_app  # noqa: E402
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
    (b'{"texts": [1, 2]}', 422, "texts.0"),
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

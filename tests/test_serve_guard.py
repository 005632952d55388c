"""inference/guard.py's cheap refusals and priorities: bodies that cannot be a valid /predict request are refused
before json.loads (whose cost on a million small values is the hostile mix's main CPU cost), the byte scan that
finds what lies outside JSON strings agrees with a JSON tokenizer written here, valid bodies of every shape pass,
the parser process runs at the lowest priority, and both HTTP protocols (httptools, h11) cut slow headers."""
from __future__ import annotations

import json
import os
import random
import socket
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="serving needs the serve extra: pip install -e '.[serve]'")

from tricklab.inference import guard  # noqa: E402
from tricklab.inference.guard import Limits, Parser, Rejected, check_structure, outside_strings, parse_predict  # noqa: E402

NUMBERS = b'{"texts": [' + b",".join([b"1"] * 1_500_000) + b"]}"
LISTS = b'{"texts": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
EMPTY_STRINGS = b'{"texts": [' + b",".join([b'""'] * 750_000) + b"]}"


def reference_outside(doc: bytes) -> bytes:
    """What lies outside string literals, by a character-by-character JSON string scanner."""
    out, i, n = bytearray(), 0, len(doc)
    while i < n:
        c = doc[i:i + 1]
        if c != b'"':
            out += c
            i += 1
            continue
        i += 1                       # inside a string until an unescaped quote
        while doc[i:i + 1] != b'"':
            i += 2 if doc[i:i + 1] == b"\\" else 1
        i += 1
    return bytes(out)


def random_doc(rng: random.Random) -> bytes:
    alphabet = ['a', '"', '\\', '中', ' ', ',', '[', ']', '{', ':', '\n', '\\"', '\\\\']
    text = lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))  # noqa: E731
    doc = {"texts": [text() if rng.random() < 0.7 else [text(), text()] for _ in range(rng.randint(1, 6))],
           "top_k": rng.randint(1, 9)}
    if rng.random() < 0.3:
        doc["meta"] = {text(): [rng.random(), None, True, text()]}
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2])).encode()


def test_outside_strings_matches_a_json_scanner_on_random_documents():
    rng = random.Random(0)
    for _ in range(3000):
        doc = random_doc(rng)
        assert outside_strings(doc) == reference_outside(doc), doc


@pytest.fixture
def no_json(monkeypatch):
    """json.loads must not run: the body is refused before it."""
    def refuse(*a, **k):
        raise AssertionError("json.loads ran on a body the byte checks should have refused")

    monkeypatch.setattr(guard.json, "loads", refuse)


@pytest.mark.parametrize("body, says", [
    (NUMBERS, "3000004 bytes of JSON outside strings"),
    (LISTS, "3000004 bytes of JSON outside strings"),
    (EMPTY_STRINGS, "750001 JSON strings"),
    # escape-heavy and still mostly numbers
    (b'{"texts": ["' + b'\\"' * 5000 + b'\\\\", ' + b",".join([b"1"] * 100_000) + b"]}", "200005 bytes of JSON outside"),
    # whitespace does not count, but what is between it does
    (b'{"texts": [' + b" ,\n" * 100_000 + b'"a"]}', "100005 bytes of JSON outside"),
])
def test_bodies_that_cannot_be_requests_are_refused_before_parsing(no_json, body, says):
    t0 = time.perf_counter()
    with pytest.raises(Rejected) as e:
        parse_predict(body, Limits())
    assert e.value.status == 413 and says in e.value.message and "at most 256 texts" in e.value.message
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("body, status, says", [
    (b"[" + b"1," * 100_000 + b"1]", 422, "must be a JSON object"),
    (b'  "just a string"', 422, "must be a JSON object"),
    (b"\xff\xfe" + b"x" * 10_000, 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"   \n", 400, "not valid JSON"),
])
def test_bodies_that_are_not_objects_are_refused_at_once(no_json, body, status, says):
    with pytest.raises(Rejected) as e:
        parse_predict(body, Limits())
    assert e.value.status == status and says in e.value.message


@pytest.mark.parametrize("pair, indent, ascii_", [(False, None, True), (False, 4, False), (True, 2, True),
                                                  (True, None, False)])
def test_valid_bodies_of_every_shape_pass(pair, indent, ascii_):
    """The largest valid requests: 256 texts of 2000 characters, with quotes, backslashes, Chinese (as \\u escapes or
    UTF-8), pretty-printed, pairs, and an extra key the server ignores."""
    limits = Limits(pair=pair)
    text = ('他说:"好\\" ' * 400)[:2000]
    texts = [[text, text[::-1]] if pair else text for _ in range(256)]
    body = json.dumps({"texts": texts, "top_k": 3, "request_id": [1, 2, 3]}, indent=indent,
                      ensure_ascii=ascii_).encode()
    assert len(body) > 16 * 256 + 1024
    check_structure(body, limits)
    got, top_k = parse_predict(body, limits)
    assert top_k == 3 and got == [tuple(t) if pair else t for t in texts]


@pytest.mark.parametrize("max_texts", [4, 256])
def test_budgets_are_32_bytes_outside_strings_and_4_strings_per_text(max_texts):
    """At the budget a body passes the byte checks; one byte (one string) more is refused. Outside strings:
    32 bytes per allowed text + 4096 (whitespace aside); strings: 4 per allowed text + 256."""
    limits = Limits(max_texts=max_texts, max_chars=50_000)
    head = b'{"texts": ["' + b"a" * 40_000 + b'"], "x": ['          # outside so far: {:[], and :[
    base = len(b'{:[],:[') + len(b"]}")
    allowed = 32 * max_texts + 4096
    at = head + b"1" * (allowed - base) + b"]}"
    check_structure(at, limits)
    with pytest.raises(Rejected) as e:
        check_structure(head + b"1" * (allowed - base + 1) + b"]}", limits)
    assert e.value.status == 413 and f"{allowed + 1} bytes of JSON outside strings" in e.value.message
    n = 4 * max_texts + 256 - 3                     # "texts", the long text and "x" are three strings
    strings = b'{"texts": ["' + b"a" * 40_000 + b'"], "x": [' + b",".join([b'""'] * n) + b"]}"
    check_structure(strings, limits)
    with pytest.raises(Rejected) as e:
        check_structure(strings[:-2] + b',""]}', limits)
    assert e.value.status == 413 and f"{4 * max_texts + 256 + 1} JSON strings" in e.value.message


def test_escape_floods_cost_linear_time():
    """Escaped quotes with no closing quote (a pathological case for a regular expression over strings) and
    escape-only bodies are scanned in linear time."""
    for body in (b"{" + b'\\"' * 1_000_000, b'{"texts": ["' + b"\\\\" * 700_000 + b'"]}',
                 b'{"texts": ["' + b'\\"' * 1_000_000):
        t0 = time.process_time()
        with pytest.raises(Rejected) as e:
            parse_predict(body, Limits())
        assert e.value.status in (400, 413) and time.process_time() - t0 < 1.0, (e.value.status, time.process_time() - t0)


@pytest.mark.parametrize("name, body", [
    ("UTF-8 with a BOM", b"\xef\xbb\xbf" + json.dumps({"texts": ["一条新闻"] * 3}, ensure_ascii=False).encode()),
    ("UTF-16-LE", json.dumps({"texts": ["丢失的新闻" * 400] * 256}, ensure_ascii=False).encode("utf-16-le")),
    ("UTF-32", json.dumps({"texts": ["丢失的新闻"] * 3}, ensure_ascii=False).encode("utf-32")),
    ("a float weight per text", json.dumps({"texts": ["some news"] * 256, "weights": [0.123456789] * 256}).encode()),
    ("a string id per pair", json.dumps({"texts": [["a" * 20, "b" * 20]] * 256, "ids": [f"id{i}" for i in range(256)]}).encode()),
])
def test_encodings_json_accepts_and_small_extra_keys_pass(name, body):
    limits = Limits(pair="pair" in name)
    texts, _ = parse_predict(body, limits)
    assert len(texts) in (3, 256)


def test_parser_process_runs_at_the_lowest_priority():
    psutil = pytest.importorskip("psutil")
    if not hasattr(os, "nice"):
        pytest.skip("no process priorities on this platform")
    import asyncio

    if os.nice(0) >= 19:
        pytest.skip("the tests themselves run at nice 19: a child's priority cannot tell")
    parser = Parser(Limits(), process_above=1000)
    body = json.dumps({"texts": ["x" * 1500], "top_k": 1}).encode()
    try:
        texts, top_k = asyncio.run(parser.parse(body))
        assert texts == ["x" * 1500] and top_k == 1
        pids = list(parser._procs._processes)
        assert pids and all(psutil.Process(p).nice() == 19 for p in pids)
    finally:
        parser.close()


def test_guarded_http_uses_httptools_when_installed_else_h11(monkeypatch):
    pytest.importorskip("httptools")
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert issubclass(guard.guarded_http(5.0), HttpToolsProtocol)
    monkeypatch.setitem(sys.modules, "httptools", None)
    assert issubclass(guard.guarded_http(5.0), H11Protocol)


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_both_protocols_cut_slow_headers_and_serve_kept_alive_requests(protocol):
    """Headers not complete within the timeout: closed without an answer, whether on a new connection or on a
    kept-alive one after a first request; a connection that finishes its headers in time is served."""
    if protocol == "httptools":
        pytest.importorskip("httptools")
    from test_serve import FakeSingle, Live, read_response

    from tricklab.inference.serve import create_app

    http = guard.guarded_httptools(1.0) if protocol == "httptools" else guard.guarded_h11(1.0)
    with Live(create_app(FakeSingle(), "fake"), header_timeout=1.0, http=http) as srv:
        with srv.connect() as s:                     # slowloris: a header line every 0.3 s
            t0 = time.perf_counter()
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            for _ in range(3):
                time.sleep(0.3)
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:                      # a stalled client is already cut: what is under test
                    break
            status, _ = read_response(s, timeout=10)
            assert status == 0 and 0.9 < time.perf_counter() - t0 < 5
        with srv.connect() as s:                     # a kept-alive connection: a request, then a slow one
            body = b'{"texts": ["a"]}'
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d"
                      b"\r\n\r\n%s" % (len(body), body))
            s.settimeout(10)
            first = s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            time.sleep(1.3)                          # idle longer than the header timeout: keep-alive's business
            t0 = time.perf_counter()
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")   # never finished
            status, _ = read_response(s, timeout=10)
            assert status == 0 and 0.9 < time.perf_counter() - t0 < 5
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.1)                          # slow but in time: 0.9 s of margin for a loaded machine
            s.sendall(b"\r\n")
            status, _ = read_response(s, timeout=10)
            assert status == 200


async def slow_app(scope, receive, send):
    """/slow answers after 1.5 s (longer than the header timeout), every other path at once."""
    import asyncio

    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.5)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def blocking_app(scope, receive, send):
    """/block holds the event loop past the header timeout, then yields once and answers: the answer (which resumes
    reading) and the header timer, due while the loop was held, run in the same loop turn, the answer first."""
    import asyncio

    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        await asyncio.sleep(0.1)
        time.sleep(0.8)
        await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def protocol(name: str, timeout: float) -> type:
    if name == "httptools":
        pytest.importorskip("httptools")
        return guard.guarded_httptools(timeout)
    return guard.guarded_h11(timeout)


def recv_all(s: socket.socket, responses: int, wait: float) -> tuple[bytes, bool]:
    """What arrives until `responses` answers are complete or `wait` s pass; True when the server closed."""
    s.settimeout(wait)
    data = b""
    try:
        while data.count(b"HTTP/1.1 200") < responses or not data.endswith(b"ok"):
            more = s.recv(65536)
            if not more:
                return data, True
            data += more
    except (socket.timeout, ConnectionResetError) as e:
        return data, isinstance(e, ConnectionResetError)
    return data, False


@pytest.mark.parametrize("name", ["httptools", "h11"])
@pytest.mark.parametrize("app, first, wait", [(slow_app, b"/slow", 0.2), (blocking_app, b"/block", 0.05)])
def test_pipelined_requests_waiting_for_a_slow_answer_are_not_cut(name, app, first, wait):
    """Three pipelined requests, the first slow, the third's headers in two parts: the server pauses reading while
    the first is answered, so the rest of the third's headers waits in the socket; that wait is not the client's.
    /block answers in the loop turn where the header timer falls due (blocking_app): reading resumes, and the
    client gets a fresh deadline for the rest of its headers."""
    from test_serve import Live

    with Live(app, http=protocol(name, 0.5), header_timeout=0.5) as srv, srv.connect() as s:
        s.sendall(b"GET " + first + b" HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHo")
        time.sleep(wait)
        s.sendall(b"st: x\r\n\r\n")
        data, closed = recv_all(s, 3, 10)
        assert data.count(b"HTTP/1.1 200") == 3 and not closed, (data, closed)


def test_stray_bytes_on_an_idle_connection_start_the_header_deadline():
    """After an answer, a bare CRLF (which the HTTP parser skips without starting a request) cancels uvicorn's
    keep-alive timer: the header deadline must take over, or the connection is held forever."""
    from test_serve import Live

    with Live(slow_app, http=protocol("httptools", 0.5), header_timeout=0.5, keep_alive=30) as srv, \
            srv.connect() as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = recv_all(s, 1, 10)
        assert data.startswith(b"HTTP/1.1 200") and not closed
        s.sendall(b"\r\n")
        t0 = time.perf_counter()
        data, closed = recv_all(s, 1, 10)
        assert closed and data == b"" and 0.4 < time.perf_counter() - t0 < 5

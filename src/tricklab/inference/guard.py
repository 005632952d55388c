"""What a request to `tricklab serve` must pass before it reaches the model, and the server's connection limits.

  content type   POST /predict needs `Content-Type: application/json` (415 names it)
  body size      counted while the body streams in, whatever its transfer encoding (chunked included): 413 as
                 soon as it passes the limit, before it is parsed
  body time      the whole body must arrive within `body_timeout` seconds (408)
  parse          JSON parsing and validation never run on the event loop (`Parser`): small bodies in a thread,
                 large ones in a worker process, since json.loads holds the GIL (a 3 MB body of a million empty
                 lists takes seconds); the number of texts is checked before any text is looked at
  texts          each text (each part of a pair): valid Unicode (no lone surrogates), not empty or whitespace
                 only, at most `max_chars` characters; a 422 (413 for length) names the index of the first bad one
  headers        `guarded_http(header_timeout)`: uvicorn's HTTP protocol, closing a connection whose request
                 headers are not complete within `header_timeout` seconds (uvicorn's own timeout_keep_alive only
                 covers idle connections between requests)
  priority       the parser process runs at the lowest CPU priority (nice 19): garbage bodies are parsed with
                 the CPU the model does not use

Error messages are short and never echo the request (`bounded`). JSON parsing is the standard library's; the
HTTP layer is uvicorn's, extended, not replaced: its httptools protocol (llhttp, C) when httptools is installed
(`tricklab[serve]` installs it), which reads a chunked body with about a third less CPU than the pure-Python h11
protocol (RESULTS §9: what an endless-body attacker costs), else h11.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 300  # characters of an error message at most


class Rejected(Exception):
    """A request refused before the model: HTTP status and a one-line message. `close`: the body may be unread,
    so the connection is closed after the answer."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.close = status, bounded(message), close

    def __reduce__(self) -> tuple:  # raised in a parser process, re-raised in the server
        return Rejected, (self.status, self.message, self.close)


def bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


@dataclass(frozen=True)
class Limits:
    max_texts: int = 256
    max_chars: int = 2000
    pair: bool = False
    body_timeout: float = 30.0      # seconds for the whole request body

    @property
    def max_body(self) -> int:
        """Bytes: a larger body cannot be a valid request (6 bytes per character as a JSON \\uXXXX escape)."""
        return self.max_texts * (self.max_chars * (2 if self.pair else 1) * 6 + 16) + 4096


def check_content_type(headers: Any) -> None:
    kind = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        shown = bounded(kind)[:60] or "none"
        raise Rejected(415, f"Content-Type {shown!r} is not supported: send the body as JSON with "
                            f"`Content-Type: application/json`", close=True)


async def read_body(request: Any, limits: Limits) -> bytes:
    """The request body, refused (413) as soon as it passes `limits.max_body` bytes, and (408) when it has not
    arrived within `limits.body_timeout` seconds."""
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > limits.max_body):
        raise Rejected(413, f"request body of {bounded(size)[:20]} bytes is too large: at most {limits.max_body} "
                            f"bytes ({limits.max_texts} texts of {limits.max_chars} characters)", close=True)

    async def collect() -> bytes:
        parts, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limits.max_body:
                raise Rejected(413, f"request body larger than {limits.max_body} bytes: at most {limits.max_texts} "
                                    f"texts of {limits.max_chars} characters", close=True)
            parts.append(chunk)
        return b"".join(parts)

    from starlette.requests import ClientDisconnect

    try:
        return await asyncio.wait_for(collect(), limits.body_timeout)
    except ClientDisconnect:
        raise Rejected(400, "the client closed the connection before the body was complete", close=True) from None
    except asyncio.TimeoutError:
        raise Rejected(408, f"the request body did not arrive within {limits.body_timeout:g} s", close=True) from None


class Parser:
    """`await parser.parse(body)` -> (texts, top_k), or Rejected: bodies up to `process_above` bytes are parsed
    in a thread, larger ones in one worker process (spawned on first use), so no request holds the server's
    GIL for long."""

    def __init__(self, limits: Limits, process_above: int = 32 << 10):
        self.limits, self.process_above = limits, process_above
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tricklab-parse")
        self._procs: ProcessPoolExecutor | None = None

    async def parse(self, body: bytes) -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        if len(body) <= self.process_above:
            return await loop.run_in_executor(self._threads, parse_predict, body, self.limits)
        if self._procs is None:
            self._procs = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=lowest_priority)
        try:
            return await loop.run_in_executor(self._procs, parse_predict, body, self.limits)
        except BrokenProcessPool:
            self._procs = None
            raise Rejected(503, "the request parser had to restart; send the request again") from None

    def close(self) -> None:
        self._threads.shutdown(wait=False)
        if self._procs is not None:
            self._procs.shutdown(wait=False, cancel_futures=True)


def lowest_priority() -> None:
    """Run this process at nice 19 (the parser process's initializer): it only gets CPU the server's model thread
    and event loop leave."""
    try:
        os.nice(19 - os.nice(0))
    except (AttributeError, OSError):   # no nice (Windows) or not permitted: parse at normal priority
        pass


NOT_JSON = 'the request body is not valid JSON (UTF-8); send {"texts": ["..."], "top_k": 1}'
OBJECT = 'the body must be a JSON object: {"texts": ["..."], "top_k": 1}'


def parse_predict(body: bytes, limits: Limits) -> tuple[list[Any], int]:
    """(texts, top_k) from a /predict body, or Rejected. Blocking: run it in a worker thread."""
    body = utf8_body(body)
    check_structure(body, limits)
    try:
        req = json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected(400, NOT_JSON) from None
    if not isinstance(req, dict):
        raise Rejected(422, OBJECT)
    if "texts" not in req:
        raise Rejected(422, 'texts: Field required; send {"texts": ["..."], "top_k": 1}')
    texts, top_k = req["texts"], req.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise Rejected(422, "top_k: must be a whole number from 1 to 1000")
    if not isinstance(texts, list):
        raise Rejected(422, f"texts: must be a list of {'[text_a, text_b] pairs' if limits.pair else 'strings'}, "
                            f"not {type(texts).__name__}")
    if not texts:
        raise Rejected(422, "texts is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise Rejected(413, f"{len(texts)} texts in one request; at most {limits.max_texts} (split the request)")
    return [check_text(i, t, limits) for i, t in enumerate(texts)], top_k


OUTSIDE_PER_TEXT, OUTSIDE_BASE = 32, 4096      # bytes of JSON outside strings a valid body may hold (whitespace aside)
STRINGS_PER_TEXT, STRINGS_BASE = 4, 256         # JSON strings a valid body may hold


def utf8_body(body: bytes) -> bytes:
    """The body as UTF-8, the encoding the byte checks read (json.loads accepts UTF-8 with a BOM, UTF-16 and UTF-32
    too: those are re-encoded first). Rejected (400) when it does not decode."""
    encoding = json.detect_encoding(body)
    if encoding == "utf-8":
        return body
    try:
        return body.decode(encoding).encode("utf-8")
    except UnicodeError:
        raise Rejected(400, NOT_JSON) from None


def check_structure(body: bytes, limits: Limits) -> None:
    """Refuse (413), before json.loads, a UTF-8 body that cannot be a valid request: more strings, or more JSON outside
    its strings (numbers, lists, objects), than a valid request holds. A million numbers or empty lists costs
    json.loads 100-800 ms of CPU; these checks cost a few linear byte scans (RESULTS §9). Texts are strings, so a valid
    body is nearly all string: two strings per text at most (pairs) plus the keys, and outside them brackets, commas,
    colons and top_k, a few bytes per text; the budgets leave room for small extra keys (an id per text, a weight per
    text). In UTF-8 the bytes of `"` and `\\` never occur inside a multi-byte character, so this reads bytes."""
    first = body.lstrip(b" \t\r\n")[:1]
    if first != b"{":      # refused at once: json.loads of a large array would cost what the checks below save
        if first and first in b'[]"-0123456789tfn':
            raise Rejected(422, OBJECT)
        raise Rejected(400, NOT_JSON)
    allowed = OUTSIDE_PER_TEXT * limits.max_texts + OUTSIDE_BASE
    if len(body) <= allowed:
        return
    plain = unescaped(body)
    strings = plain.count(b'"') // 2
    if strings > STRINGS_PER_TEXT * limits.max_texts + STRINGS_BASE:
        raise Rejected(413, f"the request body holds {strings} JSON strings: a /predict body is {{\"texts\": [...]}} "
                            f"with at most {limits.max_texts} texts")
    outside = b"".join(plain.split(b'"')[0::2])
    if len(outside) > allowed and len(outside := outside.translate(None, b" \t\r\n")) > allowed:
        raise Rejected(413, f"the request body holds {len(outside)} bytes of JSON outside strings (numbers, lists, "
                            f"objects): a /predict body is {{\"texts\": [...]}} with at most {limits.max_texts} texts "
                            f"(strings) of {limits.max_chars} characters")


def unescaped(body: bytes) -> bytes:
    """The body without its escaped backslashes, then without its escaped quotes (left to right, as JSON reads
    them): every quote left opens or closes a string, so the pieces between quotes alternate outside / inside."""
    return body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body


def outside_strings(body: bytes) -> bytes:
    """The bytes of a UTF-8 JSON document outside its string literals (what check_structure counts)."""
    return b"".join(unescaped(body).split(b'"')[0::2])


def check_text(i: int, t: Any, limits: Limits) -> Any:
    """One text (str) or pair (tuple of two str), or Rejected naming texts[i]."""
    if limits.pair:
        if isinstance(t, str):
            t = t.split("\t", 1)
        if not isinstance(t, list) or len(t) != 2:
            raise Rejected(422, f"texts[{i}]: this model classifies sentence pairs: give [text_a, text_b]")
    elif isinstance(t, list):
        raise Rejected(422, f"texts[{i}]: this model takes single texts, not lists")
    parts = t if isinstance(t, list) else [t]
    for p in parts:
        if not isinstance(p, str):
            raise Rejected(422, f"texts[{i}]: must be a string, not {type(p).__name__}")
        if len(p) > limits.max_chars:
            raise Rejected(413, f"texts[{i}] has {len(p)} characters; at most {limits.max_chars} per text")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Rejected(422, f"texts[{i}]: not valid Unicode (a lone surrogate at character {e.start}); "
                                f"send UTF-8 text") from None
        if not p.strip():
            raise Rejected(422, f"texts[{i}]: empty or whitespace only; send text to classify")
    return tuple(t) if limits.pair else t


def guarded_http(header_timeout: float) -> type:
    """The HTTP protocol class `tricklab serve` gives uvicorn: httptools' when installed, else h11's, each closing
    connections whose request headers take longer than `header_timeout` seconds."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return guarded_h11(header_timeout)
    return guarded_httptools(header_timeout)


def guarded_httptools(header_timeout: float) -> type:
    """uvicorn's HttpToolsProtocol, closing connections whose request headers take longer than `header_timeout`
    seconds: from the connection's start, or from the first byte that arrives while no request is in progress (a
    later request on a kept-alive connection, or stray bytes such as a bare CRLF, which llhttp skips without starting
    a request). Time while uvicorn has paused reading (pipelined requests waiting for a response) does not count:
    the rest of the headers cannot arrive then, and the deadline starts again when reading resumes."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _headers_done = 0                    # requests on this connection whose headers are complete
        _responses_done = 0                  # ... and whose responses are complete

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is None and self._headers_done == self._responses_done:
                self._arm()                  # idle connection, bytes that do not (yet) make a request

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._headers_done += 1
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._responses_done += 1
            paused = self.flow.read_paused
            super().on_response_complete()   # resumes reading
            if paused and self._header_timer is not None:
                self._disarm()               # a pipelined request's headers: the deadline starts again now, or
                self._arm()                  # a timer due in this loop turn closes before the waiting bytes are read

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.flow is not None and self.flow.read_paused:
                self._arm()                  # we are not reading: the client cannot be slow now
            elif not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol


def guarded_h11(header_timeout: float) -> type:
    """uvicorn's H11Protocol, closing connections whose request headers take longer than `header_timeout`
    seconds (from the connection's start, or from the first byte of a later request on a kept-alive one)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting and self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)
            elif not waiting and self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol

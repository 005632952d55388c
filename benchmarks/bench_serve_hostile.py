"""Hostile-mix load for `tricklab serve` (loopback only), used by `bench_serve.py --hostile`.

Two phases of `duration` seconds each against one server: honest clients alone ("clean"), then the same
honest clients while attackers run ("under attack"):
  slowloris   connections that send request headers one line per second and never finish them (reconnecting
              when the server cuts them)
  chunked     POST /predict with Transfer-Encoding: chunked and a body that never ends (64 kB chunks), each
              capped at `chunk_cap` bytes sent
  invalid     requests with a lone surrogate, an empty text, Content-Type text/plain, and a 3 MB list of numbers
The attackers run in a separate process, so their own CPU use does not slow the honest clients' event loop
(client, attackers and server still share this machine's cores). Honest clients keep one keep-alive connection each and send `per_request` headlines per request; every answer
is checked against an in-process Predictor on the same bundle and the same texts (label, and probabilities
within 1e-4), so "wrong" counts answers that differ from `tricklab predict --bundle`.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

HOST = "127.0.0.1"


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


async def honest(port: int, texts: list[str], ref: dict[str, dict[str, Any]], per_request: int, start: int,
                 stop: asyncio.Event, out: dict[str, Any]) -> None:
    """One keep-alive connection: POST /predict, check each answer against the reference, repeat until `stop`."""
    from bench_serve import RawConnection

    conn, i = RawConnection(HOST, port), start
    try:
        while not stop.is_set():
            batch = [texts[(i + j) % len(texts)] for j in range(per_request)]
            i += per_request * 7
            payload = json.dumps({"texts": batch, "top_k": 3}, ensure_ascii=False).encode()
            t0 = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.post("/predict", payload), 60)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                out["errors"][type(e).__name__] = out["errors"].get(type(e).__name__, 0) + 1
                await conn.close()
                continue
            if status != 200:
                out["errors"][f"HTTP {status}"] = out["errors"].get(f"HTTP {status}", 0) + 1
                continue
            out["lat"].append((time.perf_counter() - t0) * 1000)
            for text, got in zip(batch, json.loads(body)["predictions"]):
                want = ref[text]
                diff = max(abs(a[1] - b[1]) for a, b in zip(got["top_k"], want["top_k"]))
                out["texts"] += 1
                out["max_diff"] = max(out["max_diff"], diff)
                out["wrong"] += got["label"] != want["label"] or diff > 1e-4
    finally:
        await conn.close()


async def connect(port: int, stop: asyncio.Event) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A new connection to the server, retried every 0.5 s (it refuses beyond its limit); None once stopped."""
    while not stop.is_set():
        try:
            return await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.5)
    return None


async def slowloris(port: int, stop: asyncio.Event, out: dict[str, Any]) -> None:
    while (conn := await connect(port, stop)) is not None:
        r, w = conn
        out["slowloris_opened"] += 1
        t0 = time.perf_counter()
        try:
            w.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set():
                try:
                    if await asyncio.wait_for(r.read(1), 1.0) == b"":
                        break                                   # the server cut it
                except asyncio.TimeoutError:
                    w.write(b"X-Slow: 1\r\n")                  # one more header line, never the end
                    await w.drain()
            else:
                out["slowloris_alive_at_end"] += 1
        except OSError:
            pass
        out["slowloris_held_s"].append(time.perf_counter() - t0)
        w.close()


CHUNK = b"[" + b'"a",' * 16000                          # one 64 kB piece of an endless body
FRAME = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)             # ... as a chunked-encoding frame


async def chunked(port: int, stop: asyncio.Event, cap: int, out: dict[str, Any]) -> None:
    while (conn := await connect(port, stop)) is not None:
        r, w = conn
        sent = 0
        answer = asyncio.ensure_future(r.readuntil(b"\r\n\r\n"))
        try:
            w.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + b'b\r\n{"texts": [\r\n')
            while not answer.done() and sent < cap and not stop.is_set():
                w.write(FRAME)
                await w.drain()
                sent += len(CHUNK)
                await asyncio.sleep(0)
            head = await asyncio.wait_for(answer, 10)
            key = f"HTTP {head.split()[1].decode()}"
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError) as e:
            key = f"cut ({type(e).__name__})"   # the server answered and closed while we were still sending
        answer.cancel()
        out["chunked"][key] = out["chunked"].get(key, 0) + 1
        out["chunked_bytes"].append(sent)
        w.close()


INVALID = [
    ("lone surrogate", b'{"texts": ["ok", "\\ud800abc"]}', "application/json"),
    ("empty text", b'{"texts": ["ok", "  "]}', "application/json"),
    ("text/plain", b'{"texts": ["ok"]}', "text/plain"),
    ("3 MB of numbers", b'{"texts": [' + b",".join([b"1"] * 1_500_000) + b"]}", "application/json"),
]


async def invalid(port: int, stop: asyncio.Event, out: dict[str, Any]) -> None:
    from bench_serve import RawConnection

    i = 0
    while not stop.is_set():
        name, body, kind = INVALID[i % len(INVALID)]
        i += 1
        conn = RawConnection(HOST, port)
        try:
            conn_payload = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                            % (kind.encode(), len(body)) + body)
            conn.reader, conn.writer = await asyncio.open_connection(HOST, port)
            conn.writer.write(conn_payload)
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 30)
            key = f"{name}: HTTP {head.split()[1].decode()}"
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            key = f"{name}: {type(e).__name__}"
        await conn.close()
        out["invalid"][key] = out["invalid"].get(key, 0) + 1
        await asyncio.sleep(0.05)


def fresh() -> dict[str, Any]:
    return {"lat": [], "errors": {}, "texts": 0, "wrong": 0, "max_diff": 0.0}


def attack_process(port: int, attack: dict[str, int], duration: float, chunk_cap: int, q: Any) -> None:
    """Runs in a child process: the attackers for `duration` s; their counts go back through `q`."""

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        atk: dict[str, Any] = {"slowloris_opened": 0, "slowloris_alive_at_end": 0, "slowloris_held_s": [],
                               "chunked": {}, "chunked_bytes": [], "invalid": {}}
        tasks = [asyncio.ensure_future(slowloris(port, stop, atk)) for _ in range(attack["slowloris"])]
        tasks += [asyncio.ensure_future(chunked(port, stop, chunk_cap, atk)) for _ in range(attack["chunked"])]
        tasks += [asyncio.ensure_future(invalid(port, stop, atk)) for _ in range(attack["invalid"])]
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.wait(tasks, timeout=60)
        for t in tasks:
            t.cancel()
        return atk

    q.put(asyncio.run(main()))


async def phase(port: int, texts: list[str], ref: dict, clients: int, per_request: int, duration: float,
                attack: dict[str, int] | None, chunk_cap: int) -> dict[str, Any]:
    import multiprocessing as mp

    stop = asyncio.Event()
    res = fresh()
    proc = q = None
    if attack:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=attack_process, args=(port, attack, duration + 2, chunk_cap, q), daemon=True)
        proc.start()
        await asyncio.sleep(2)   # the attackers are in place before the honest clients start
    tasks = [asyncio.ensure_future(honest(port, texts, ref, per_request, 13 * c, stop, res)) for c in range(clients)]
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.wait(tasks, timeout=90)
    for t in tasks:
        t.cancel()
    res["wall_s"] = time.perf_counter() - t0
    res["p50_ms"], res["p99_ms"] = (statistics.median(res["lat"]) if res["lat"] else float("nan")), pct(res["lat"], 0.99)
    res["requests"] = len(res["lat"])
    res["attack"] = None
    if proc is not None:
        res["attack"] = await asyncio.get_running_loop().run_in_executor(None, q.get, True, 120)
        proc.join(30)
    return res


def run_hostile(url: str, bundle: Any, texts: list[str], args: Any) -> list[dict[str, Any]]:
    """Clean phase, then attack phase; the reference answers come from an in-process Predictor."""
    from tricklab.inference import Predictor

    port = int(url.rsplit(":", 1)[1])
    pool = texts[: args.agree_n]
    pred = Predictor.from_bundle(bundle, threads=args.threads)
    ref = dict(zip(pool, pred.predict(pool, top_k=3)))
    attack = {"slowloris": args.slowloris, "chunked": args.chunked, "invalid": args.invalid}
    rows = []
    for name, atk in (("clean", None), ("under attack", attack)):
        r = asyncio.run(phase(port, pool, ref, args.clients, args.per_request_hostile, args.duration, atk,
                              args.chunk_cap))
        r["phase"] = name
        rows.append(r)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| phase | honest requests | texts checked | p50 ms | p99 ms | honest errors | wrong answers "
             "(vs Predictor) | max prob diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        errs = sum(r["errors"].values())
        lines.append(f"| {r['phase']} | {r['requests']:,} | {r['texts']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{errs}{' ' + str(r['errors']) if errs else ''} | {r['wrong']} | {r['max_diff']:.1e} |")
    atk = next((r["attack"] for r in rows if r["attack"]), None)
    if atk:
        held = atk["slowloris_held_s"]
        lines.append("")
        lines.append(f"attackers: slowloris connections opened {atk['slowloris_opened']}, held at most "
                     f"{max(held) if held else float('nan'):.1f} s each (median {statistics.median(held) if held else float('nan'):.1f} s; "
                     f"{atk['slowloris_alive_at_end']} cut by the end of the phase rather than the server); "
                     f"endless chunked bodies: {atk['chunked']}, bytes sent before the answer at most "
                     f"{max(atk['chunked_bytes'] or [0]):,}; invalid requests: {atk['invalid']}")
    return "\n".join(lines)

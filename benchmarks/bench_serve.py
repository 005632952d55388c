"""Bounded load test of `tricklab serve` on loopback (127.0.0.1 only).

1. starts `tricklab serve --bundle B --host 127.0.0.1 --port <free port>` as a subprocess, waits for /health;
2. checks that the served answers agree with an in-process Predictor on the same bundle (labels, probabilities);
3. for each --per-request value: --clients concurrent connections (raw asyncio HTTP/1.1 keep-alive, or
   httpx.AsyncClient with --client httpx) send POST /predict with THUCNews test headlines, each connection
   sending its next request when its answer is in, for at most --duration seconds and at most
   --max-requests requests;
4. stops the server with SIGINT and checks that it exits by itself (exit code 0, "stopped: served ..." logged).

Reports requests/s, texts/s, client-side latency p50/p99, errors, the server's average micro-batch size
(texts per model call, from /health counters), and the client's own CPU use (client and server share the cores).

--hostile replaces step 3 with a hostile mix (bench_serve_hostile.py): honest clients alone, then honest clients
beside slowloris connections, endless chunked bodies and invalid requests; it reports the honest clients' p50/p99
in both phases and their answers that differ from an in-process Predictor on the same texts.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_serve.py --bundle runs/bench_bundles/int8
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_serve.py --bundle B --hostile --duration 30 --clients 4
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode} before /health answered")
        try:
            r = httpx.get(url + "/health", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"server did not answer /health within {timeout:.0f} s")


def check_agreement(url: str, bundle: Path, texts: list[str], threads: int, chunk: int = 16) -> dict[str, Any]:
    """Served predictions vs an in-process Predictor on the same bundle. Requests of `chunk` texts are sent
    one at a time, so each model call on the server holds exactly one request's texts; the reference predicts
    the same chunks, and should match to float precision. A dynamically quantized (int8) model quantizes the
    activations with one scale per model call, so its probabilities also depend on which texts share a batch:
    `batch_effect` is that difference (the same texts predicted all at once vs in chunks), for scale."""
    import httpx

    from tricklab.inference import Predictor

    pred = Predictor.from_bundle(bundle, threads=threads)
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    ref = [p for c in chunks for p in pred.predict(c, top_k=3)]
    together = pred.predict(texts, top_k=3)
    got: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as c:
        for part in chunks:
            r = c.post(url + "/predict", json={"texts": part, "top_k": 3})
            r.raise_for_status()
            got += r.json()["predictions"]

    def diff(xs: list[dict[str, Any]], ys: list[dict[str, Any]]) -> float:
        return max(abs(pa - pb) for a, b in zip(xs, ys) for (_, pa), (_, pb) in zip(a["top_k"], b["top_k"]))

    return {"n": len(texts), "chunk": chunk, "same_label": sum(a["label"] == b["label"] for a, b in zip(ref, got)),
            "max_prob_diff": diff(ref, got),
            "batch_effect_same_label": sum(a["label"] == b["label"] for a, b in zip(ref, together)),
            "batch_effect_max_prob_diff": diff(ref, together)}


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a load generator that costs far less CPU per
    request than httpx (client and server share this machine's cores, so a heavy client slows the server)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % (path.encode(), self.host.encode(), self.port, len(payload))
                          + payload)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


async def load(url: str, texts: list[str], per_request: int, clients: int, duration: float, cap: int,
               kind: str = "raw") -> dict[str, Any]:
    """`clients` concurrent connections, each sending its next request when the previous answer is in."""
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    t_end = time.perf_counter() + duration
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)

    def next_body() -> list[str]:
        nonlocal sent
        i = (sent * per_request) % len(texts)
        sent += 1
        return texts[i:i + per_request] if i + per_request <= len(texts) else texts[:per_request]

    async def raw_client() -> None:
        conn = RawConnection(host, int(port))
        try:
            while sent < cap and time.perf_counter() < t_end:
                batch = next_body()
                payload = json.dumps({"texts": batch}, ensure_ascii=False).encode()
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(conn.post("/predict", payload), 60)
                    ok = status == 200 and len(json.loads(body)["predictions"]) == len(batch)
                    key = None if ok else f"HTTP {status}"
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                    key = type(e).__name__
                    await conn.close()
                if key:
                    errors[key] = errors.get(key, 0) + 1
                else:
                    lat.append((time.perf_counter() - t0) * 1000)
        finally:
            await conn.close()

    async def httpx_client(c: httpx.AsyncClient) -> None:
        while sent < cap and time.perf_counter() < t_end:
            batch = next_body()
            t0 = time.perf_counter()
            try:
                r = await c.post(url + "/predict", json={"texts": batch})
                ok = r.status_code == 200 and len(r.json()["predictions"]) == len(batch)
                key = None if ok else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                key = type(e).__name__
            if key:
                errors[key] = errors.get(key, 0) + 1
            else:
                lat.append((time.perf_counter() - t0) * 1000)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        h0 = (await c.get(url + "/health")).json()
        cpu0, t0 = time.process_time(), time.perf_counter()
        if kind == "raw":
            await asyncio.gather(*(raw_client() for _ in range(clients)))
        else:
            await asyncio.gather(*(httpx_client(c) for _ in range(clients)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        h1 = (await c.get(url + "/health")).json()
    done = len(lat)
    calls = h1["batches"] - h0["batches"]
    return {"client": kind, "texts_per_request": per_request, "clients": clients, "requests": sent, "ok": done,
            "errors": sum(errors.values()), "error_kinds": errors, "wall_s": wall,
            "requests_per_s": done / wall, "texts_per_s": done * per_request / wall,
            "p50_ms": statistics.median(lat) if lat else float("nan"),
            "p99_ms": sorted(lat)[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else float("nan"),
            "model_calls": calls, "texts_per_model_call": done * per_request / calls if calls else float("nan"),
            "client_cpu_share": cpu / wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(ROOT / "runs" / "bench_bundles" / "int8"),
                    help="bundle to serve (default: the int8 bundle bench_inference.py exports)")
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="run to export --bundle from when it is missing")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "thucnews"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per load row (upper bound)")
    ap.add_argument("--max-requests", type=int, default=20000, help="requests per load row (upper bound)")
    ap.add_argument("--per-request", default="1,8", help="texts per request, one load row each")
    ap.add_argument("--client", default="raw", choices=["raw", "httpx", "both"],
                    help="load generator: raw asyncio HTTP/1.1 keep-alive connections (light), httpx.AsyncClient "
                         "(~4 ms of client CPU per request here), or one row of each")
    ap.add_argument("--threads", type=int, default=2, help="server inference threads")
    ap.add_argument("--agree-n", type=int, default=256, help="headlines for the served-vs-Predictor check")
    ap.add_argument("--json", default="")
    h = ap.add_argument_group("hostile mix (--hostile)")
    h.add_argument("--hostile", action="store_true", help="honest clients alone, then beside attackers (see above)")
    h.add_argument("--slowloris", type=int, default=16, help="slowloris connections")
    h.add_argument("--chunked", type=int, default=2, help="clients sending endless chunked bodies")
    h.add_argument("--invalid", type=int, default=2, help="clients sending invalid requests")
    h.add_argument("--per-request-hostile", type=int, default=4, help="texts per honest request")
    h.add_argument("--chunk-cap", type=int, default=64 << 20, help="bytes one chunked body may send at most")
    h.add_argument("--header-timeout", type=float, default=10.0, help="server --header-timeout")
    h.add_argument("--body-timeout", type=float, default=30.0, help="server --body-timeout")
    args = ap.parse_args(argv)

    from bench_inference import cpu_model, ensure_bundle, read_data, versions

    bundle = Path(args.bundle)
    if not (bundle / "bundle.json").is_file():
        ensure_bundle(Path(args.run), bundle, "int8" if bundle.name == "int8" else None)
    texts, _ = read_data(Path(args.data))
    quant = json.loads((bundle / "bundle.json").read_text(encoding="utf-8")).get("quantize") or "fp32"

    port = free_port()
    url = f"http://{HOST}:{port}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"tricklab-serve-{port}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "tricklab.cli", "serve", "--bundle", str(bundle), "--host", HOST,
           "--port", str(port), "--threads", str(args.threads), "--header-timeout", str(args.header_timeout),
           "--body-timeout", str(args.body_timeout)]
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    rows: list[dict[str, Any]] = []
    try:
        health = wait_health(url, proc, timeout=180)
        print(f"# server up in {time.perf_counter() - t_start:.1f} s: {health}", file=sys.stderr)
        agree = check_agreement(url, bundle, texts[: args.agree_n], args.threads)
        print(f"# agreement: {agree}", file=sys.stderr)
        kinds = ["raw", "httpx"] if args.client == "both" else [args.client]
        if args.hostile:
            from bench_serve_hostile import run_hostile

            hostile = run_hostile(url, bundle, texts, args)
        for k in ([] if args.hostile else (int(x) for x in args.per_request.split(","))):
            for kind in kinds:
                row = asyncio.run(load(url, texts, k, args.clients, args.duration, args.max_requests, kind))
                rows.append(row)
                print(f"# {row}", file=sys.stderr)
    finally:
        t_stop = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            print("# server did not stop within 60 s of SIGINT: killed", file=sys.stderr)
        stop_s = time.perf_counter() - t_stop
    server_log = log.read_text(encoding="utf-8", errors="replace")
    graceful = code == 0 and "stopped: served" in server_log
    load1 = os.getloadavg()[0]

    env_line = (f"{versions()}; CPU {cpu_model()} ({os.cpu_count()} cores); server: tricklab serve --bundle "
                f"({quant}) --threads {args.threads} on {HOST}; clients: {args.clients} concurrent connections from "
                f"one asyncio process on the same machine; load average before {load0:.2f}, after {load1:.2f}")
    print(f"environment: {env_line}\n")
    print(f"served vs in-process Predictor on {agree['n']} headlines ({agree['chunk']} per request / per call): "
          f"same label {agree['same_label']}/{agree['n']}, max probability difference {agree['max_prob_diff']:.1e}; "
          f"for scale, in-process all {agree['n']} at once vs in chunks of {agree['chunk']}: same label "
          f"{agree['batch_effect_same_label']}/{agree['n']}, max probability difference "
          f"{agree['batch_effect_max_prob_diff']:.1e}")
    print(f"shutdown: SIGINT -> exit code {code} in {stop_s:.1f} s; graceful (drained, 'stopped' logged): "
          f"{'yes' if graceful else 'NO'}; server log: {[ln for ln in server_log.splitlines() if ln.strip()][-1:]}\n")
    if args.hostile:
        from bench_serve_hostile import report

        print(f"hostile mix: {args.clients} honest connections x {args.per_request_hostile} texts per request, "
              f"{args.duration:.0f} s per phase; server --header-timeout {args.header_timeout:g} "
              f"--body-timeout {args.body_timeout:g}\n")
        print(report(hostile))
        if args.json:
            Path(args.json).write_text(json.dumps({"environment": env_line, "agreement": agree, "exit_code": code,
                                                   "graceful": graceful, "hostile": hostile}, indent=2), "utf-8")
        return 0 if graceful and all(r["wrong"] == 0 for r in hostile) else 1
    print("| texts/request | client | connections | requests | wall s | requests/s | texts/s | p50 ms | p99 ms | "
          "errors | texts per model call | client CPU |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['texts_per_request']} | {r['client']} | {r['clients']} | {r['ok']:,} | {r['wall_s']:.1f} | "
              f"{r['requests_per_s']:,.1f} | {r['texts_per_s']:,.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['errors']}{' ' + str(r['error_kinds']) if r['errors'] else ''} | "
              f"{r['texts_per_model_call']:.1f} | {r['client_cpu_share']:.0%} of a core |")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env_line, "agreement": agree, "exit_code": code,
                                               "graceful": graceful, "rows": rows}, indent=2), encoding="utf-8")
    return 0 if graceful and all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

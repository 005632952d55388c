"""What one refused request costs `tricklab serve` in CPU, per HTTP protocol (h11 vs httptools).

Starts `tricklab serve`'s own app and uvicorn configuration (inference/serve.py create_app + uvicorn_config)
with a stand-in model in a subprocess, sends it refused requests one after the other, and reads the server's
CPU time (its process and children, e.g. the parser process, from psutil) before and after:
  chunked   an endless `Transfer-Encoding: chunked` body in 64 kB chunks (the hostile mix's attacker), cut by
            the server with a 413 once it passes the body limit (~3 MB with the defaults)
  numbers   a 3 MB JSON list of 1.5 million numbers with a Content-Length (under the limit), refused after
            parsing (413: too many texts), parsed in the server's parser process
No model runs: the cost is the HTTP layer and the parser alone.

    .venv/bin/python benchmarks/bench_body_cost.py --protocols h11,httptools --n 40
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from bench_serve import HOST, free_port
from bench_serve_hostile import CHUNK, FRAME, INVALID

NUMBERS = dict((name, body) for name, body, _ in INVALID)["3 MB of numbers"]   # the hostile mix's own attacks


class Stub:
    backend, task, labels = "stub", "single_label", ["a", "b"]
    meta = {"data": {"pair": False, "max_length": 16}}

    def predict(self, texts: list, top_k: int = 1) -> list[dict]:
        return [{"label": "a", "score": 1.0, "top_k": [["a", 1.0]]} for _ in texts]


def serve(port: int, protocol: str) -> None:
    import uvicorn

    from tricklab.inference import guard
    from tricklab.inference.serve import create_app, uvicorn_config

    cfg = uvicorn_config(create_app(Stub(), "stub"), HOST, port)
    cfg.http = guard.guarded_h11(10.0) if protocol == "h11" else guard.guarded_httptools(10.0)
    uvicorn.Server(cfg).run()


def cpu(proc: psutil.Process) -> float:
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def answer(sock: socket.socket) -> int:
    """Status code of the server's answer (0: closed without one)."""
    sock.settimeout(30)
    data = b""
    try:
        while b"\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                return 0
            data += more
    except (ConnectionResetError, socket.timeout):
        return 0
    return int(data.split()[1])


def send_chunked(port: int) -> tuple[int, int]:
    sent = 0
    with socket.create_connection((HOST, port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + b'b\r\n{"texts": [\r\n')
        try:
            while sent < 64 << 20:
                s.sendall(FRAME)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return answer(s), sent


def send_numbers(port: int) -> tuple[int, int]:
    with socket.create_connection((HOST, port)) as s:
        try:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d"
                      b"\r\n\r\n" % len(NUMBERS) + NUMBERS)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return answer(s), len(NUMBERS)


def measure(protocol: str, n: int) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--protocol", protocol])
    try:
        for _ in range(300):
            try:
                socket.create_connection((HOST, port)).close()
                break
            except OSError:
                time.sleep(0.1)
        proc = psutil.Process(server.pid)
        send_numbers(port)          # starts the parser process, outside the measurement
        row = {"protocol": protocol}
        for kind, send in (("chunked", send_chunked), ("numbers", send_numbers)):
            c0, t0, codes, sent = cpu(proc), time.perf_counter(), {}, 0
            for _ in range(n):
                code, nbytes = send(port)
                codes[code] = codes.get(code, 0) + 1
                sent += nbytes
            row[kind] = {"server_cpu_ms_per_body": round((cpu(proc) - c0) / n * 1000, 1),
                         "wall_ms_per_body": round((time.perf_counter() - t0) / n * 1000, 1),
                         "answers": codes, "mb_sent_per_body": round(sent / n / 1e6, 2)}
        return row
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", default="h11,httptools")
    ap.add_argument("--n", type=int, default=40, help="refused requests of each kind per protocol")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--protocol", default="httptools", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        return serve(args.serve, args.protocol)
    rows = [measure(p, args.n) for p in args.protocols.split(",")]
    print("| protocol | endless chunked body: server CPU ms | wall ms | MB sent | answers "
          "| 3 MB of numbers: server CPU ms | wall ms | answers |")
    print("|---|---:|---:|---:|---|---:|---:|---|")
    for r in rows:
        c, m = r["chunked"], r["numbers"]
        print(f"| {r['protocol']} | {c['server_cpu_ms_per_body']} | {c['wall_ms_per_body']} | {c['mb_sent_per_body']} "
              f"| {c['answers']} | {m['server_cpu_ms_per_body']} | {m['wall_ms_per_body']} | {m['answers']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""What the common server layer costs per call, measured side by side.

Issue 28 made every handler a request-streaming one, so that who calls is decided before a
request's body is read (`meshsearch_common.server_interceptor`). This measures, in one run, one
process per server and calls interleaved in rounds so that a drifting machine favours none:
  (a) a plain grpc.aio unary handler;
  (b) the same behaviour served as a request-streaming handler reading its one message (the
      conversion alone);
  (c) the same handler behind the common ServerInterceptor (conversion, an admission, the read
      budget, deadlines, metrics and the access log line), as every service runs it.
Each call sends a 1 KiB request and gets 1 KiB back. Prints p50 and p99, the ratios to (a), and
the CPU.
Usage:
  .venv/bin/python bench/server/run.py [--rounds 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from typing import Any

import grpc

from meshsearch_harness.figures import cpu_description, percentile

METHOD = "/bench.Echo/Call"
PAYLOAD = b"x" * 1024


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _echo_stream(requests: Any, context: Any) -> bytes:
    async for request in requests:
        return bytes(request)
    return b""


async def _admit(method: str, context: Any) -> None:
    """An admission as cheap as the api's cached-key check is not: only the call itself."""


async def serve(form: str) -> None:
    from meshsearch_common.read_budget import ReadBudget
    from meshsearch_common.server_interceptor import ServerInterceptor

    logging.disable(logging.INFO)  # the access log line is formatted but not written to a terminal
    interceptors = []
    if form == "common":
        interceptors = [ServerInterceptor(10.0, 120.0, admissions=[_admit], budget=ReadBudget(256 * 1024 * 1024))]
    server = grpc.aio.server(interceptors=interceptors)
    handler = (
        grpc.stream_unary_rpc_method_handler(_echo_stream)
        if form == "streaming"
        else grpc.unary_unary_rpc_method_handler(_echo)
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {"Call": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def measure(rounds: int) -> None:
    forms = ("plain", "streaming", "common")
    processes = {
        form: subprocess.Popen([sys.executable, __file__, "--serve", form], stdout=subprocess.PIPE, text=True)
        for form in forms
    }
    try:
        ports = {form: int(process.stdout.readline()) for form, process in processes.items()}  # type: ignore[union-attr]
        channels = {form: grpc.insecure_channel(f"127.0.0.1:{port}") for form, port in ports.items()}
        calls = {form: channel.unary_unary(METHOD) for form, channel in channels.items()}
        for call in calls.values():  # warm up: connections, first-call setup
            for _ in range(200):
                call(PAYLOAD, timeout=10)
        timings: dict[str, list[float]] = {form: [] for form in forms}
        for i in range(rounds):
            for form in forms[i % 3 :] + forms[: i % 3]:  # each form leads a third of the rounds
                started = time.perf_counter()
                calls[form](PAYLOAD, timeout=10)
                timings[form].append((time.perf_counter() - started) * 1000)
        print(f"CPU: {cpu_description()}")
        print(f"{rounds} rounds, one 1 KiB call at a time, forms interleaved:")
        labels = {
            "plain": "(a) plain unary handler",
            "streaming": "(b) request-streaming handler reading one message",
            "common": "(c) behind the common ServerInterceptor",
        }
        p50 = {form: percentile(timings[form], 50) for form in forms}
        for form in forms:
            print(f"  {labels[form]:52s} p50 {p50[form]:6.3f} ms   p99 {percentile(timings[form], 99):6.3f} ms")
        for form in forms[1:]:
            print(f"{form} / plain, p50: {p50[form] / p50['plain']:.2f}x ({(p50[form] - p50['plain']) * 1000:+.0f} us)")
    finally:
        for process in processes.values():
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--serve", choices=["plain", "streaming", "common"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
    else:
        measure(args.rounds)


if __name__ == "__main__":
    main()

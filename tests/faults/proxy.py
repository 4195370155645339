"""A TCP proxy that breaks the link it carries, on demand, while load runs through it: the
network faults that killing or freezing a process does not show.

Put one between a client and its upstream (point the client at `proxy.port`) and set its
`Fault` at any time from any thread:
- `Fault.PASS`: bytes flow as they come;
- `Fault.delay(latency_s, jitter_s)`: each chunk waits latency ± jitter (order is kept);
- `Fault.throttle(bytes_per_s)`: each direction limited to that rate;
- `Fault.RESET`: every open connection is reset (RST, not FIN), and new ones are reset at once;
- `Fault.SILENT`: connections are accepted, and nothing flows either way: a half-open peer;
- `Fault.VANISH`: the connections open now go silent for good, as if the node behind them
  vanished without a reset; new connections (the node's replacement) flow normally.

It runs its own event loop on a thread, so synchronous tests and asyncio tests use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass
from typing import ClassVar

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fault:
    kind: str
    latency_s: float = 0.0
    jitter_s: float = 0.0
    bytes_per_s: float = 0.0

    PASS: ClassVar[Fault]
    RESET: ClassVar[Fault]
    SILENT: ClassVar[Fault]
    VANISH: ClassVar[Fault]

    @classmethod
    def delay(cls, latency_s: float, jitter_s: float = 0.0) -> Fault:
        return cls("delay", latency_s=latency_s, jitter_s=jitter_s)

    @classmethod
    def throttle(cls, bytes_per_s: float) -> Fault:
        return cls("throttle", bytes_per_s=bytes_per_s)


Fault.PASS = Fault("pass")
Fault.RESET = Fault("reset")
Fault.SILENT = Fault("silent")
Fault.VANISH = Fault("vanish")


class _Link:
    """One proxied connection: two pumps, and whether it was cut off for good."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)
        self.vanished = False

    def reset(self) -> None:
        for writer in self.writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close() sends RST
                with contextlib.suppress(OSError):  # already closed
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.fault = Fault.PASS
        self.connections = 0  # accepted so far
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._server: asyncio.Server | None = None
        self.port = 0

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        """Stop accepting, and end every link's pumps."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def set(self, fault: Fault) -> None:
        """Switch the fault; RESET and VANISH act on the connections open now at once."""
        self._loop.call_soon_threadsafe(self._apply, fault)

    def _apply(self, fault: Fault) -> None:
        self.fault = fault
        if fault.kind == "reset":
            for link in list(self._links):
                link.reset()
        elif fault.kind == "vanish":
            for link in self._links:
                link.vanished = True

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.fault.kind == "reset":
            _Link(writer, writer).reset()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(reader, up_writer, link), self._pump(up_reader, writer, link))
        except asyncio.CancelledError:
            pass  # the proxy is closing
        finally:
            self._links.discard(link)
            for end in (writer, up_writer):
                end.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    writer.write_eof() if writer.can_write_eof() else None
                    return
                await self._hold(chunk, link)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            return

    async def _hold(self, chunk: bytes, link: _Link) -> None:
        """Wait as the fault says before passing `chunk` on; forever, for a silent link."""
        while link.vanished or self.fault.kind == "silent":
            await asyncio.sleep(0.05)  # held until the link heals (never, once vanished)
        fault = self.fault
        if fault.kind == "delay":
            await asyncio.sleep(max(0.0, fault.latency_s + random.uniform(-fault.jitter_s, fault.jitter_s)))
        elif fault.kind == "throttle":
            await asyncio.sleep(len(chunk) / fault.bytes_per_s)

"""HTTP/2 keepalive, the same on both ends of every hop, so that a link that goes silent without
a reset (a node that vanished, a firewall that dropped its state) is found in seconds, not when
each call's deadline runs out or TCP gives up some fifteen minutes later.

Clients ping every KEEPALIVE_TIME_S, idle or not, and drop a connection whose ping is not
answered within KEEPALIVE_TIMEOUT_S; the next call then opens a new one. A gRPC server by
default takes a ping more often than every five minutes as abuse (GOAWAY "too_many_pings"),
so servers here accept one every MIN_PING_INTERVAL_S, half the clients' period. Servers ping
too, to free what a vanished client held. A pure module: the public Python client uses it.
"""

from __future__ import annotations

KEEPALIVE_TIME_S = 10.0
KEEPALIVE_TIMEOUT_S = 5.0
MIN_PING_INTERVAL_S = KEEPALIVE_TIME_S / 2
SERVER_KEEPALIVE_TIME_S = 60.0


def client_options() -> list[tuple[str, int]]:
    """Channel options of every client: a silent connection is dropped within
    KEEPALIVE_TIME_S + KEEPALIVE_TIMEOUT_S."""
    return [
        ("grpc.keepalive_time_ms", int(KEEPALIVE_TIME_S * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),  # an idle channel finds out before its next call
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging while no call sends data
        # gRPC core waits a minute for any ping's answer by default, whatever keepalive_timeout
        # says (measured: a vanished link was dropped after 60 s): wait as long as keepalive says.
        ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    ]


def server_options() -> list[tuple[str, int]]:
    """Server options: accept the clients' pings, and ping idle clients to find vanished ones."""
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", int(MIN_PING_INTERVAL_S * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.keepalive_time_ms", int(SERVER_KEEPALIVE_TIME_S * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    ]

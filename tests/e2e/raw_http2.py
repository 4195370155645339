"""A minimal gRPC call over raw HTTP/2 (the h2 library), for headers that gRPC client
libraries refuse to send, such as non-ASCII bytes in `authorization`: what a hostile client
could still put on the wire."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events


def call(port: int, path: str, headers: list[tuple[bytes, bytes]], message: bytes = b"") -> tuple[str, str]:
    """(grpc-status, grpc-message) of one unary call to 127.0.0.1:`port`, or ("RESET", code)
    when the server resets the stream instead of answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", f"127.0.0.1:{port}".encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                *headers,
            ],
        )
        conn.send_data(stream, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
        sock.sendall(conn.data_to_send())
        answer: dict[bytes, bytes] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return "CLOSED", ""
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    answer.update(dict(event.headers))
                    if b"grpc-status" in answer:
                        return answer[b"grpc-status"].decode(), answer.get(b"grpc-message", b"").decode()
                if isinstance(event, h2.events.StreamReset):
                    return "RESET", str(event.error_code)
                if isinstance(event, h2.events.ConnectionTerminated):
                    return "GOAWAY", str(event.error_code)
            sock.sendall(conn.data_to_send())

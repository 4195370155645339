"""The least a Python gRPC server can do to answer VectorStoreService.Query, for comparison.

Same runtime as the search service (grpc.aio, psycopg 3 async, pgvector) and the statement
the service sends for an unfiltered query, but nothing else: no validation, collection lookup,
pool, deadlines, logs, metrics or interceptor; one connection with ef_search set once. The benchmark runs it beside
the real service so the cost of the gRPC hop itself is measured, not assumed: what the service
loses to direct SQL beyond what this server loses is the service's own overhead.

Usage (started by run.py): reference_server.py DATABASE_URL TABLE PORT EF_SEARCH
Prints "ready" once it accepts calls; serves until terminated.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc


class ReferenceQueryServicer(search_pb2_grpc.VectorStoreServiceServicer):
    def __init__(self, conn: psycopg.AsyncConnection, table: str) -> None:
        self._conn = conn
        self._statement = (
            f"SELECT id, text, metadata, NULL, embedding <=> %s::vector AS distance FROM {table} "
            "WHERE TRUE ORDER BY embedding <=> %s::vector LIMIT %s"
        )

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext) -> pb.QueryResponse:
        vector = np.frombuffer(request.vector.data, np.float32)
        cursor = await self._conn.execute(self._statement, (vector, vector, request.k))
        response = pb.QueryResponse()
        for point_id, text, metadata, _, distance in await cursor.fetchall():
            hit = response.points.add()
            hit.score = 1.0 - distance
            hit.point.id = point_id
            hit.point.text = text
            hit.point.metadata.update(metadata)
        return response


async def main(url: str, table: str, port: int, ef_search: int) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await register_vector_async(conn)
    await conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
    server = grpc.aio.server()
    search_pb2_grpc.add_VectorStoreServiceServicer_to_server(ReferenceQueryServicer(conn, table), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))

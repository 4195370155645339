"""Kill -9 every process of the mesh in turn during an ingest job, and check that the job still
stores every document exactly once. Used by tests/e2e/test_ingest_faults.py in two sizes: a
short form in `make test` and the full form in `make chaos`.

The stack runs under the same Supervisor as `meshsearch up`, which restarts killed services;
PostgreSQL, which `up` does not supervise, is restarted here after a pause.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client.uploads import upload
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_cli.supervisor import RestartPolicy, Supervisor
from meshsearch_common.backoff import Backoff
from tests.e2e.ingest_helpers import assert_stored_exactly_once, wait_job

# Killed one after another while the job runs (the api during the upload).
VICTIMS = ("worker", "embedder", "search", "postgres")
POSTGRES_DOWN_S = 2.0


@dataclass
class SupervisedStack:
    """A running stack and a thread restarting its services as `meshsearch up` would."""

    stack: EmbeddedStack
    events: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SupervisedStack:
        supervisor = Supervisor(
            self.stack, RestartPolicy(backoff=Backoff(0.2, 30, "none"), max_fast_crashes=20), notify=self.events.append
        )

        def loop() -> None:
            while not self._stop.is_set():
                supervisor.check()
                time.sleep(0.1)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _killing_api_midway(stack: EmbeddedStack, documents: list[pb.Document]) -> Iterator[pb.Document]:
    """The documents, with the api SIGKILLed once half of them were handed to the upload."""
    for index, document in enumerate(documents):
        if index == len(documents) // 2:
            stack.kill("api")
        yield document


async def ingest_through_faults(
    stack: EmbeddedStack, channel: grpc.aio.Channel, collection: str, documents: list[pb.Document], timeout_s: float
) -> list[str]:
    """Upload `documents` killing the api midway, then kill each of VICTIMS in turn as the job
    progresses; return what was killed, once the job has completed and its documents are
    checked (count and content hash)."""
    killed = ["api"]
    result = await upload(channel, _killing_api_midway(stack, documents), collection=collection)
    assert result.reconnects >= 1, "the upload never saw the api die"
    for step, victim in enumerate(VICTIMS, start=1):
        threshold = len(documents) * step // (len(VICTIMS) + 1)
        job = await wait_job(channel, result.job_id, timeout_s, until_done=threshold)
        if job.state != pb.JOB_STATE_RUNNING:
            break  # finished before this victim's turn (a very fast machine)
        stack.kill(victim)
        killed.append(victim)
        if victim == "postgres":
            await asyncio.sleep(POSTGRES_DOWN_S)
            await asyncio.to_thread(stack.restart, "postgres")
    job = await wait_job(channel, result.job_id, timeout_s)
    if job.failed:
        letters = await pb_grpc.IngestServiceStub(channel).ListDeadLetters(
            pb.ListDeadLettersRequest(job_id=result.job_id, page_size=1000), timeout=10
        )
        reasons = sorted({(letter.code, letter.reason) for letter in letters.dead_letters})
        raise AssertionError(f"{job.failed} documents became dead letters: {reasons}")
    assert (job.state, job.received, job.done) == (pb.JOB_STATE_COMPLETED, len(documents), len(documents)), job
    await assert_stored_exactly_once(channel, collection, documents)
    return killed

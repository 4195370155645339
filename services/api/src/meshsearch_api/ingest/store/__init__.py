"""JobStore: the durable state of ingest jobs in PostgreSQL, one module per concern (`jobs`,
`staging`, `claims`, `dead_letters`, `sweeps`, `turns`, over `base`).

What it guarantees, and how:
- an acknowledged document is staged: it is committed before the upload acknowledges it, in
  the transaction that advances the job's `received` count (so a resumed upload continues at
  exactly the first document the server does not hold);
- a batch is processed by one worker at a time: a worker claims it with a row lock
  (FOR UPDATE SKIP LOCKED) held until it records the outcome, and a killed worker's lock dies
  with its connection, so the batch is simply claimable again;
- progress is counted once: a batch moves from pending to done (or dead) only while claimed,
  and the job's counters move in that same transaction;
- tenants take turns: each has at most a window of batches queued or running (`turns`);
- a job completes in the transaction that finishes its last batch (or closes its upload):
  both lock the job row first, so two workers finishing together cannot both miss it.
"""

from __future__ import annotations

from meshsearch_api.ingest.store.base import DOCUMENT_FAULTS, RECEIPT_PREFIX, batch_receipt, job_receipt_prefix
from meshsearch_api.ingest.store.claims import CLAIM_WAIT_MS, Claim, Claims
from meshsearch_api.ingest.store.dead_letters import DeadLetters
from meshsearch_api.ingest.store.jobs import JobRecords
from meshsearch_api.ingest.store.staging import Staged, Staging, batches_of
from meshsearch_api.ingest.store.sweeps import Sweeps
from meshsearch_api.ingest.store.turns import Turns

__all__ = [
    "CLAIM_WAIT_MS",
    "DOCUMENT_FAULTS",
    "RECEIPT_PREFIX",
    "Claim",
    "JobStore",
    "Staged",
    "batch_receipt",
    "batches_of",
    "job_receipt_prefix",
]


class JobStore(JobRecords, Staging, Claims, DeadLetters, Sweeps, Turns):
    """Every operation on ingest jobs, over one pool of the api's database."""

"""Plain data types of ingest jobs (no protobuf, no SQL)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from meshsearch_api.domain import LimitViolation


class JobState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Priority(enum.IntEnum):
    """Also procrastinate's job priority: higher values are fetched first."""

    BULK = 1
    NORMAL = 2
    INTERACTIVE = 3


@dataclass(frozen=True)
class Job:
    id: str
    collection: str
    state: JobState
    priority: Priority
    upload_complete: bool
    received: int
    done: int
    failed: int
    create_time: datetime
    update_time: datetime
    finish_time: datetime | None
    error: str
    collection_create_time: datetime | None = None  # None for jobs from before it was recorded
    tenant: str = "default"  # whose job it is: its collection is that tenant's

    @property
    def ended(self) -> bool:
        return self.state is not JobState.RUNNING


@dataclass(frozen=True)
class StagedDocument:
    """A document of a batch as staged by the upload."""

    sequence: int
    id: str
    text: str
    metadata: dict[str, object]


@dataclass(frozen=True)
class DeadLetter:
    """A document of a job that was not stored, and why. One the upload or a worker has just
    refused has no attempts or time yet: the store gives it both when it sets it aside."""

    sequence: int
    document_id: str
    code: int  # a grpc.StatusCode's value[0]
    reason: str
    attempts: int = 0
    create_time: datetime | None = None
    text_bytes: int = 0


@dataclass(frozen=True)
class Progress:
    job: Job
    documents_per_second: float
    eta_s: float | None


@dataclass(frozen=True)
class Estimate:
    documents: int
    chunks: int
    tokens: int
    duration_s: float | None
    tokens_per_second: float
    violations: list[LimitViolation]

"""The forms of the identifiers callers send, checked where they enter a service.

An identifier goes on into SQL, logs and other services. One that cannot be stored there (a NUL
character, which PostgreSQL's text type refuses; a number past its column's range) must be
refused at the door as INVALID_ARGUMENT naming the field, not fail deep in a driver as INTERNAL.

Identifiers the mesh issues itself (job ids, key ids) have a fixed form, so anything else is
refused before any lookup, with the same answer whoever asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from meshsearch_common.errors import InvalidArgument

MAX_DOCUMENT_ID_CHARS = 256
JOB_ID_FORM = "[0-9a-f]{32}"  # uuid4().hex
KEY_ID_FORM = "[0-9a-f]{16}"  # secrets.token_hex(8)
_JOB_ID = re.compile(rf"^{JOB_ID_FORM}$")
_KEY_ID = re.compile(rf"^{KEY_ID_FORM}$")
_SEQUENCE = re.compile(r"^[0-9]{1,18}$")  # fits PostgreSQL's bigint


def document_id_problem(document_id: str) -> str | None:
    """Why `document_id` cannot name a document, or None. The same rule for writes and reads."""
    if not 1 <= len(document_id) <= MAX_DOCUMENT_ID_CHARS:
        return f"id must be 1 to {MAX_DOCUMENT_ID_CHARS} characters"
    if "\x00" in document_id:
        return "id must not contain NUL characters"
    return None


def check_document_ids(ids: Iterable[str], field: str) -> None:
    """INVALID_ARGUMENT naming the first id (`field[i]`) that no document can have."""
    for index, document_id in enumerate(ids):
        problem = document_id_problem(document_id)
        if problem:
            raise InvalidArgument(f"{field}[{index}]: {problem}", field=f"{field}[{index}]")


def check_text(value: str, field: str) -> str:
    """`value`, or INVALID_ARGUMENT when it holds a NUL character (no text column stores one)."""
    if "\x00" in value:
        raise InvalidArgument(f"{field} must not contain NUL characters", field=field)
    return value


def _issued(value: str, field: str, form: re.Pattern[str], what: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not form.match(value):
        raise InvalidArgument(f"{field} is not {what}", field=field)
    return value


def check_job_id(job_id: str, field: str = "job_id") -> str:
    """A job id as the api issues it, or INVALID_ARGUMENT."""
    return _issued(job_id, field, _JOB_ID, "a job id (32 lowercase hex digits, as StartIngest returns)")


def check_key_id(key_id: str, field: str = "key_id") -> str:
    """An API key id as the api issues it, or INVALID_ARGUMENT."""
    return _issued(key_id, field, _KEY_ID, "a key id (16 lowercase hex digits, as CreateApiKey returns)")


def parse_sequence(value: str, field: str) -> int:
    """A non-negative whole number that fits a bigint column, or INVALID_ARGUMENT."""
    if not _SEQUENCE.match(value):
        raise InvalidArgument(f"{field} is not one this server issued", field=field)
    return int(value)

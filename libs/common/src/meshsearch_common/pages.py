"""Page tokens (AIP-158): opaque to callers, here the last key of the previous page. One
encoding for every service, so the api can check a token the search service issued."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime

from meshsearch_common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def checked_size(page_size: int) -> int:
    """The page size in force: 0 means DEFAULT_PAGE_SIZE; beyond 1..MAX_PAGE_SIZE is INVALID_ARGUMENT."""
    size = page_size or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size {size} is out of range: 1 to {MAX_PAGE_SIZE}", field="page_size")
    return size


def encode(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode()


def decode(token: str, field: str, next_field: str = "next_page_token") -> str:
    try:
        key = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not key or "\x00" in key:  # no key this server issues holds NUL; no text column stores one
        raise InvalidArgument(f"{field} is not one this server issued; pass {next_field} unchanged", field=field)
    return key


def encode_position(created: datetime, row_id: str) -> str:
    """A token for a list ordered by (creation time, id): the last row's pair, so the next page
    needs no lookup of that row (which would tell whether an id exists, even another tenant's)."""
    return encode(f"{created.isoformat()}|{row_id}")


def decode_position(token: str, field: str, check_id: Callable[[str, str], str]) -> tuple[datetime, str]:
    """The (creation time, id) an `encode_position` token carries; INVALID_ARGUMENT for
    anything else, `check_id(id, field)` deciding what an id may look like."""
    created, _, row_id = decode(token, field).partition("|")
    try:
        return datetime.fromisoformat(created), check_id(row_id, field)
    except (ValueError, InvalidArgument):
        raise InvalidArgument(f"{field} is not one this server issued", field=field) from None

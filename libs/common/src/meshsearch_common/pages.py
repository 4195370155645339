"""Page tokens (AIP-158): opaque to callers, here the last key of the previous page. One
encoding for every service, so the api can check a token the search service issued."""

from __future__ import annotations

import base64
import binascii

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
    if not key:
        raise InvalidArgument(f"{field} is not one this server issued; pass {next_field} unchanged", field=field)
    return key

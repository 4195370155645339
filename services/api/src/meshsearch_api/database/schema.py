"""Tables of the api's database: ingest jobs, API keys, and procrastinate's own (version 1: the
one of the pinned release; see docs/ingestion.md before upgrading it). The api and the workers
apply them at start through `meshsearch_common.migrations`: once, under an advisory lock,
append-only."""

from __future__ import annotations

import psycopg
from procrastinate.schema import SchemaManager

from meshsearch_common import migrations

_LOCK_KEY = 0x6D736A62  # "msjb": meshsearch jobs


async def _queue_schema(conn: psycopg.AsyncConnection) -> None:
    """procrastinate's tables, unless the database already has them (another app's queue)."""
    cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    row = await cursor.fetchone()
    if not (row and row[0]):
        await conn.execute(SchemaManager.get_schema())


MIGRATIONS: list[tuple[int, migrations.Migration]] = [
    (1, _queue_schema),
    (
        2,
        """
        CREATE TABLE meshsearch_ingest_jobs (
            id              text PRIMARY KEY,
            collection      text NOT NULL,
            priority        smallint NOT NULL,
            state           text NOT NULL DEFAULT 'running',
            upload_complete boolean NOT NULL DEFAULT false,
            received        bigint NOT NULL DEFAULT 0,
            done            bigint NOT NULL DEFAULT 0,
            failed          bigint NOT NULL DEFAULT 0,
            error           text NOT NULL DEFAULT '',
            create_time     timestamptz NOT NULL DEFAULT clock_timestamp(),
            update_time     timestamptz NOT NULL DEFAULT clock_timestamp(),
            finish_time     timestamptz
        );
        CREATE INDEX meshsearch_ingest_jobs_newest ON meshsearch_ingest_jobs (create_time DESC, id DESC);
        CREATE TABLE meshsearch_ingest_batches (
            id          bigserial PRIMARY KEY,
            job_id      text NOT NULL REFERENCES meshsearch_ingest_jobs ON DELETE CASCADE,
            state       text NOT NULL DEFAULT 'pending',
            documents   integer NOT NULL,
            attempts    integer NOT NULL DEFAULT 0,
            not_before  timestamptz NOT NULL DEFAULT clock_timestamp(),
            last_error  text NOT NULL DEFAULT '',
            update_time timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX meshsearch_ingest_batches_pending ON meshsearch_ingest_batches (job_id) WHERE state = 'pending';
        -- Which queued task runs a batch. Kept apart from the batch row so that recording it
        -- never holds a lock a worker claiming the batch would meet.
        CREATE TABLE meshsearch_ingest_batch_tasks (
            batch_id  bigint PRIMARY KEY REFERENCES meshsearch_ingest_batches ON DELETE CASCADE,
            task_id   bigint NOT NULL,
            queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE TABLE meshsearch_ingest_documents (
            job_id   text NOT NULL REFERENCES meshsearch_ingest_jobs ON DELETE CASCADE,
            seq      bigint NOT NULL,
            doc_id   text NOT NULL,
            text     text NOT NULL,
            metadata jsonb NOT NULL,
            batch_id bigint,
            PRIMARY KEY (job_id, seq)
        );
        CREATE INDEX meshsearch_ingest_documents_by_id ON meshsearch_ingest_documents (job_id, doc_id);
        CREATE INDEX meshsearch_ingest_documents_by_batch ON meshsearch_ingest_documents (batch_id)
            WHERE batch_id IS NOT NULL;
        CREATE TABLE meshsearch_ingest_dead_letters (
            job_id      text NOT NULL REFERENCES meshsearch_ingest_jobs ON DELETE CASCADE,
            seq         bigint NOT NULL,
            doc_id      text NOT NULL,
            code        integer NOT NULL,
            reason      text NOT NULL,
            attempts    integer NOT NULL,
            create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (job_id, seq)
        );
        """,
    ),
    # The collection's creation time when the job started: a collection deleted and created
    # again under the same name is another collection, which the job must not write into.
    (3, "ALTER TABLE meshsearch_ingest_jobs ADD COLUMN collection_create_time timestamptz"),
    # Tenants: a job belongs to the tenant of the key that started it (jobs from before are the
    # default tenant's); API keys are stored as argon2id hashes, found by their public id.
    (
        4,
        """
        ALTER TABLE meshsearch_ingest_jobs ADD COLUMN tenant text NOT NULL DEFAULT 'default';
        CREATE INDEX meshsearch_ingest_jobs_by_tenant ON meshsearch_ingest_jobs (tenant, create_time DESC, id DESC);
        CREATE TABLE meshsearch_api_keys (
            key_id      text PRIMARY KEY,
            tenant      text NOT NULL,
            roles       text[] NOT NULL,
            name        text NOT NULL DEFAULT '',
            secret_hash text NOT NULL,
            read_per_s  double precision NOT NULL DEFAULT 0,
            write_per_s double precision NOT NULL DEFAULT 0,
            create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
            revoke_time timestamptz
        );
        CREATE INDEX meshsearch_api_keys_by_tenant ON meshsearch_api_keys (tenant, create_time, key_id);
        """,
    ),
    # Keys may expire (NULL: never); keys made before never do.
    (5, "ALTER TABLE meshsearch_api_keys ADD COLUMN expire_time timestamptz"),
    # When an ended job was tidied (its staged copies and receipts dropped, its index built);
    # NULL while it runs, and for an ended job whose tidying did not happen yet, which the
    # reconciler then does. Jobs that ended before had their one best-effort tidying.
    (
        6,
        """
        ALTER TABLE meshsearch_ingest_jobs ADD COLUMN tidy_time timestamptz;
        UPDATE meshsearch_ingest_jobs SET tidy_time = finish_time WHERE state <> 'running';
        CREATE INDEX meshsearch_ingest_jobs_untidy ON meshsearch_ingest_jobs (finish_time)
            WHERE tidy_time IS NULL AND state <> 'running';
        """,
    ),
    # A dead letter records its text's size; the text itself (its staged copy) goes with the
    # retention (JobStore.purge_dead_letter_texts), or at once when redriving cannot help.
    (
        7,
        """
        ALTER TABLE meshsearch_ingest_dead_letters ADD COLUMN text_bytes bigint NOT NULL DEFAULT 0;
        UPDATE meshsearch_ingest_dead_letters l SET text_bytes = octet_length(d.text)
            FROM meshsearch_ingest_documents d WHERE d.job_id = l.job_id AND d.seq = l.seq;
        """,
    ),
    # Tenants take turns in the queue (ingest.store.turns): a tenant's batches in flight are
    # found from the queue's live tasks, through the task each batch records.
    (8, "CREATE INDEX meshsearch_ingest_batch_tasks_by_task ON meshsearch_ingest_batch_tasks (task_id)"),
    # What the reconciler's retention sweeps look for every few seconds (Sweeps.purge_ended_jobs,
    # KeyStore.purge_ended): without these each sweep reads every job and every key there is.
    (
        9,
        """
        CREATE INDEX meshsearch_ingest_jobs_ended ON meshsearch_ingest_jobs (finish_time)
            WHERE tidy_time IS NOT NULL AND state <> 'running';
        CREATE INDEX meshsearch_api_keys_ended ON meshsearch_api_keys ((least(revoke_time, expire_time)))
            WHERE revoke_time IS NOT NULL OR expire_time IS NOT NULL;
        """,
    ),
]


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Bring the jobs database to the newest version; return the version in force."""
    return await migrations.apply(conn, _LOCK_KEY, "meshsearch_ingest_schema", MIGRATIONS)

"""meshsearch search: the system of record for vectors and documents (PostgreSQL + pgvector)."""

"""`python -m meshsearch_embedder`: run the embedder service in this process (what its image runs)."""

from meshsearch_common.server import run
from meshsearch_embedder.app import create_app

if __name__ == "__main__":
    run(create_app())

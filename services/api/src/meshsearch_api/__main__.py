"""`python -m meshsearch_api`: run the api service in this process (what its image runs)."""

from meshsearch_api.app import create_app
from meshsearch_common.server import run

if __name__ == "__main__":
    run(create_app())

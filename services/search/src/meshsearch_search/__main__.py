"""`python -m meshsearch_search`: run the search service in this process (what its image runs)."""

from meshsearch_common.server import run
from meshsearch_search.app import create_app

if __name__ == "__main__":
    run(create_app())

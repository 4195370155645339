"""meshsearch api: the public contract; orchestrates the embedder and search services."""

"""meshsearch embedder: turns text into vectors, batching concurrent requests."""

"""Operator tooling for meshsearch, kept out of the services and their images.

The `meshsearch` command (`main`), the embedded stack that runs the real services as processes
on loopback (`stack`) and keeps them running (`supervisor`), the demo and its corpus, and the
indexing client that cooperates with the server's flow control (`indexing`). Tests and
benchmarks use `stack` as their testing API.
"""

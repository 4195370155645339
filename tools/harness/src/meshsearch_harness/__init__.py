"""What the tests (tests/) and the benchmarks (bench/) share, as an installed package so that
neither reaches into the other: the public evaluation sets in ../shared/data (`datasets`),
retrieval scoring through the public api (`evaluation`), two api replicas with auth on over the
embedded stack (`secured`), and what a figure was measured on (`figures`)."""

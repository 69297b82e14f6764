"""Fixtures for development, demos and benchmarks: the demo product, the load tests' product
and the seeding both build on. Production code does not import this package; the `demo` and
`seed_benchmark` commands, the load tests and the test suite do (docs/architecture.md)."""

"""The load tests: the decide benchmark (bench/), its wrk scripts and generators."""

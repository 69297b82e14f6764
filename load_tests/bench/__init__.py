"""The decide benchmark (docs/contract.md, "Performance targets"), in one command:

    python -m load_tests.bench                  # the full run
    python -m load_tests.bench --quick          # a smoke run: well under a minute

`python load_tests/bench.py ...` runs the same command (the commands cited in RESULTS.md).
See load_tests/README.md. One module per concern, each importable on its own (nothing is
imported here, so `from load_tests.bench import report` needs neither psutil nor Django):

- run:       the run's id, paths, progress log
- meters:    CPU seconds and RSS of processes and of the machine (psutil)
- database:  the throwaway PostgreSQL database of the run, its seed, the cache prefix
- servers:   Lab as `make serve-production` runs it (deploy/front.py's nginx in front of
             gunicorn.conf.py on a unix socket), or bare gunicorn for A/B
- peer:      Unleash on Node 22 with its own PostgreSQL cluster
- scenarios: what each scenario sends (the wrk scripts, the traffic shapes)
- drivers:   wrk (closed loop) and load_tests/openloop.py (fixed rate), metered
- phases:    main (rounds), fixed, growth, soak; profile in profile.py
- stats:     spreads over rounds, ratios taken round by round, slopes
- report:    the Markdown report and the RESULTS.md section
- cli:       the command line
"""

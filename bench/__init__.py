"""`make bench`: basetts against the alternatives a user would pick, on the local server, in one run.

Run with `python -m bench` (or `make bench`, `make bench QUICK=1`). Results go to docs/performance.md
and docs/performance.png. See docs/performance.md for what is measured, where and why.
"""

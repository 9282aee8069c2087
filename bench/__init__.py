"""h2k benchmarks, run by hand (`make bench`); results go to BENCHMARKS.md."""

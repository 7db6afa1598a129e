"""Tests of the benchmarks suite (benchmarks/): its boundary, its report, a smoke run."""

"""Benchmark programs (issue 7): each prints a table of the system beside a baseline in the same run."""

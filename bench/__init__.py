"""Benchmarks: they report numbers (tables and JSON) instead of asserting them; never run by the test suite."""

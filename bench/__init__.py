"""Benchmarks (not run by CI): `python3 -m bench.<name>` from the repository root."""

"""Development helpers shared by the tests, the benchmark and the demo (not shipped)."""

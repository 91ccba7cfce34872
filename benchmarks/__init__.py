"""Performance benchmarks of the AtScale provider: ``make bench`` (see ``benchmarks/README.md``)."""

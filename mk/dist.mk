# `make dist`: the sdist and the wheel in dist/, the wheel built from the sdist, both checked by twine.
# tests/test_packaging.py (part of `make test`) also installs the wheel into a fresh virtualenv and asks
# Airflow for the provider and its connection type.
DIST_DIR ?= dist

.PHONY: dist

# Built in an isolated environment with the build backend pyproject.toml names, as a release is.
dist: install
	rm -rf $(DIST_DIR)
	$(BIN)/python -m build --outdir $(DIST_DIR) .
	$(BIN)/twine check --strict $(DIST_DIR)/*

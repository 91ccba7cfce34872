# `make test-matrix`: `make test` (lint, mypy and the suite on the newest Airflow 3, in $(VENV)), then the
# whole suite again on each Airflow minor in MATRIX_AIRFLOW, each in its own virtualenv.
#
#   make test-matrix                                  newest 3.x, then 2.11
#   make test-matrix MATRIX_AIRFLOW="2.11 3.0 3.1 3.2"   every supported minor
#   make test-airflow-3.1                             one minor alone
#   make matrix-lock-2.11                             re-resolve a minor and rewrite its constraints file
#   make matrix-clean                                 remove the matrix virtualenvs
#
# Each virtualenv installs from mk/constraints-airflow-<minor>.txt, a full pip freeze, so a run installs
# the same versions every time whatever PyPI has published since. Airflow publishes constraints files for
# each release, but on GitHub, which is not reachable here; these stand in for them. They are made by
# `make matrix-lock-<minor>` from the release and the few pins below, each found by running the suite.
# Lint and mypy run in `make test` only: mypy reads the newest Airflow's types.
MATRIX_AIRFLOW ?= 2.11
MATRIX_VENV_PREFIX := .venv-airflow-

MATRIX_RELEASE_2.11 := 2.11.2
MATRIX_PINS_2.11 :=
MATRIX_RELEASE_3.0 := 3.0.6
# Newer FastAPI, Cadwyn and pydantic break 3.0's in-process execution API that dag.test() uses.
MATRIX_PINS_3.0 := fastapi==0.117.1 cadwyn<6 pydantic<2.12
MATRIX_RELEASE_3.1 := 3.1.8
MATRIX_PINS_3.1 :=
MATRIX_RELEASE_3.2 := 3.2.2
# svcs 26 and Cadwyn 9 break 3.2's in-process execution API (no services registry; schema errors): use
# the Cadwyn and FastAPI that 3.3 resolves.
MATRIX_PINS_3.2 := svcs<26 cadwyn<8 fastapi<0.137

.PHONY: test-matrix matrix-clean

test-matrix: test $(addprefix test-airflow-,$(MATRIX_AIRFLOW))

# Not .PHONY (pattern rules are not searched for phony targets); no file of these names is ever made.
test-airflow-%: $(MATRIX_VENV_PREFIX)%/.installed
	$(MATRIX_VENV_PREFIX)$*/bin/python -c 'import airflow; print("Airflow", airflow.__version__)'
	$(MATRIX_VENV_PREFIX)$*/bin/python -m pytest -p no:cacheprovider

# Kept, though only a prerequisite: make deletes intermediate files of pattern rules.
.PRECIOUS: $(MATRIX_VENV_PREFIX)%/.installed

# The '*' .gitignore, as Python 3.13's venv writes it, keeps git, ruff and hatch out of the virtualenv.
$(MATRIX_VENV_PREFIX)%/.installed: mk/constraints-airflow-%.txt pyproject.toml
	rm -rf $(MATRIX_VENV_PREFIX)$*
	$(PYTHON) -m venv $(MATRIX_VENV_PREFIX)$*
	echo '*' > $(MATRIX_VENV_PREFIX)$*/.gitignore
	$(MATRIX_VENV_PREFIX)$*/bin/python -m pip install --quiet --no-compile \
		--constraint mk/constraints-airflow-$*.txt -e '.[test]'
	touch $@

matrix-lock-%:
	test -n "$(MATRIX_RELEASE_$*)" || { echo "no MATRIX_RELEASE_$* in mk/matrix.mk"; exit 1; }
	rm -rf build/matrix-lock-$*
	$(PYTHON) -m venv build/matrix-lock-$*
	build/matrix-lock-$*/bin/python -m pip install --quiet --no-compile \
		'apache-airflow==$(MATRIX_RELEASE_$*)' -e '.[test]' $(foreach pin,$(MATRIX_PINS_$*),'$(pin)')
	{ echo "# Airflow $(MATRIX_RELEASE_$*) and the test extra, as resolved by \`make matrix-lock-$*\`."; \
	  echo "# Hand pins: $(or $(MATRIX_PINS_$*),none). Python $$($(PYTHON) -c 'import sys; print(sys.version.split()[0])')."; \
	  build/matrix-lock-$*/bin/python -m pip freeze --exclude-editable; } > mk/constraints-airflow-$*.txt
	rm -rf build/matrix-lock-$*

matrix-clean:
	rm -rf $(MATRIX_VENV_PREFIX)*

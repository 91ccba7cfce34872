# `make test-matrix`: `make test` (lint, mypy and the suite on the newest Airflow 3 and the default Python,
# in $(VENV)), then the whole suite again on each older Airflow minor (on the default Python) and on each
# other Python (with the newest Airflow), each in its own virtualenv. This is what CI runs.
#
#   make test-matrix                                  everything below
#   make test-matrix MATRIX_AIRFLOW=2.11 MATRIX_PYTHON=3.10   a smaller matrix
#   make test-airflow-3.1                             one Airflow minor alone
#   make test-python-3.10                             one Python alone (mk/find-python finds it: PATH, pyenv)
#   make matrix-lock-2.11 / make python-lock-3.13     re-resolve one and rewrite its constraints file
#   make matrix-clean                                 remove the matrix virtualenvs
#
# Each virtualenv installs from mk/constraints-airflow-<minor>.txt, a full pip freeze, so a run installs
# the same versions every time whatever PyPI has published since. Airflow publishes constraints files for
# each release, but on GitHub, which is not reachable here; these stand in for them. They are made by
# `make matrix-lock-<minor>` from the release and the few pins below, each found by running the suite.
# Lint and mypy run in `make test` only: mypy reads the newest Airflow's types.
MATRIX_AIRFLOW ?= 2.11 3.0 3.1 3.2
MATRIX_PYTHON ?= 3.10 3.12 3.13
MATRIX_VENV_PREFIX := .venv-airflow-
PYTHON_VENV_PREFIX := .venv-python-
# The Airflow release the Python axis runs: the newest, as $(VENV) resolves it today.
PYTHON_AXIS_AIRFLOW := 3.3.2

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

MATRIX_TARGETS := $(addprefix test-airflow-,$(MATRIX_AIRFLOW)) $(addprefix test-python-,$(MATRIX_PYTHON))
# The matrix runs leave out the tests marked slow (the wheel built and installed into a fresh virtualenv):
# `make test` runs them, and they test packaging, not versions.
MATRIX_PYTEST := -m pytest -p no:cacheprovider -m "not slow"

.PHONY: test-matrix matrix matrix-clean

test-matrix: test matrix

# Every run of the matrix; independent of each other, so `make -j2 -O matrix` runs two at a time (CI does).
matrix: $(MATRIX_TARGETS)

# Not .PHONY (pattern rules are not searched for phony targets); no file of these names is ever made.
test-airflow-%: $(MATRIX_VENV_PREFIX)%/.installed
	$(MATRIX_VENV_PREFIX)$*/bin/python -c 'import airflow; print("Airflow", airflow.__version__)'
	$(MATRIX_VENV_PREFIX)$*/bin/python $(MATRIX_PYTEST)

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

# The Python axis: the same suite with the newest Airflow on each Python in MATRIX_PYTHON.
test-python-%: $(PYTHON_VENV_PREFIX)%/.installed
	$(PYTHON_VENV_PREFIX)$*/bin/python -c 'import sys, airflow; print("Python", sys.version.split()[0], "Airflow", airflow.__version__)'
	$(PYTHON_VENV_PREFIX)$*/bin/python $(MATRIX_PYTEST)

.PRECIOUS: $(PYTHON_VENV_PREFIX)%/.installed

$(PYTHON_VENV_PREFIX)%/.installed: mk/constraints-python-%.txt pyproject.toml
	rm -rf $(PYTHON_VENV_PREFIX)$*
	"$$(mk/find-python $*)" -m venv $(PYTHON_VENV_PREFIX)$*
	echo '*' > $(PYTHON_VENV_PREFIX)$*/.gitignore
	$(PYTHON_VENV_PREFIX)$*/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON_VENV_PREFIX)$*/bin/python -m pip install --quiet --no-compile \
		--constraint mk/constraints-python-$*.txt -e '.[test]'
	touch $@

python-lock-%:
	rm -rf build/python-lock-$*
	"$$(mk/find-python $*)" -m venv build/python-lock-$*
	build/python-lock-$*/bin/python -m pip install --quiet --upgrade pip
	build/python-lock-$*/bin/python -m pip install --quiet --no-compile \
		'apache-airflow==$(PYTHON_AXIS_AIRFLOW)' -e '.[test]'
	{ echo "# Airflow $(PYTHON_AXIS_AIRFLOW) and the test extra on Python $*, as resolved by \`make python-lock-$*\`."; \
	  echo "# Python $$(build/python-lock-$*/bin/python -c 'import sys; print(sys.version.split()[0])')."; \
	  build/python-lock-$*/bin/python -m pip freeze --exclude-editable; } > mk/constraints-python-$*.txt
	rm -rf build/python-lock-$*

matrix-clean:
	rm -rf $(MATRIX_VENV_PREFIX)* $(PYTHON_VENV_PREFIX)*

# Browser test of the `atscale` connection form: Airflow's api-server and the AtScale emulator on
# 127.0.0.1, driven by Playwright in Debian's headless Chromium. Opt-in: plain `make test` skips tests/ui.
#
#   make test-ui         install Chromium (apt) and Playwright (pip, into $(VENV)) if missing, run tests/ui
#   make ui-screenshot   the same, and copy the form's screenshot to docs/connection-form.png
#
# Playwright never downloads a browser here: the tests launch $(UI_CHROMIUM).
UI_CHROMIUM ?= /usr/bin/chromium
# pytest's temporary folder for these tests; screenshots land in the folder of the test that took them.
UI_BASETEMP ?= /tmp/airflow-provider-atscale-ui
UI_PLAYWRIGHT_READY := $(VENV)/.playwright-installed
UI_APT_GET := $(if $(filter 0,$(shell id -u)),,sudo )apt-get
UI_PYTEST := ATSCALE_UI_TESTS=1 ATSCALE_UI_CHROMIUM=$(UI_CHROMIUM) \
	$(BIN)/pytest tests/ui --basetemp=$(UI_BASETEMP) --durations=5

.PHONY: test-ui ui-screenshot ui-deps

$(UI_CHROMIUM):
	$(UI_APT_GET) update
	$(UI_APT_GET) install -y chromium

$(UI_PLAYWRIGHT_READY): $(INSTALLED)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet 'playwright>=1.40'
	touch $@

ui-deps: $(UI_CHROMIUM) $(UI_PLAYWRIGHT_READY)

test-ui: ui-deps
	$(UI_PYTEST)
	@echo "Screenshots: $(UI_BASETEMP)/test_test_button_*/"

ui-screenshot: ui-deps
	ATSCALE_UI_SCREENSHOT_DIR=$(CURDIR)/docs $(UI_PYTEST)
	@echo "Wrote docs/connection-form.png"

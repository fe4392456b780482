# The two set-up commands (see README.md):
#   make run    - install, then run the whole system embedded on http://127.0.0.1:8000
#   make test   - install what the tests need (Kafka broker jars included), then run every test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test install kafka-jars chromium bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/pingstream up

# A real Healthchecks client for tests/compat/test_clients.py. It pins croniter below 4, whose DST
# handling differs from the croniter pingstream needs, so it goes in without its pins; the client
# itself does not depend on croniter's DST behaviour.
CLIENTS = $(VENV)/.clients
$(CLIENTS): $(STAMP)
	$(BIN)/pip install --quiet --no-deps 'healthchecks-io==0.4.4'
	$(BIN)/pip install --quiet 'httpx>=0.23,<0.28' 'pydantic>=2' 'pytz'
	touch $(CLIENTS)

kafka-jars: install
	$(BIN)/python -m runtime.kafkabroker fetch

# The status board's browser tests drive Debian's chromium (Playwright's own download is not used).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Two workers (pytest-xdist), each given whole test files: most of the suite's time is real-time
# scenarios waiting on clocks and processes, so two at once take about 0.6 of the time on 2 cores.
# TEST_WORKERS=0 runs it in one process. pytest exits 5 when it collected no tests: that is a
# failure here, never a pass.
TEST_WORKERS ?= 2
test: install kafka-jars $(CLIENTS) chromium
	$(BIN)/python -m pytest -ra -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: install kafka-jars
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) .cache pingstream-data

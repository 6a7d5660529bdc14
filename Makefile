# Two commands do all the set-up on a fresh machine (Debian, Python 3.10+, root or sudo for apt):
#   make demo   installs what is missing, then runs the main job on the embedded default
#   make test   installs what is missing, then runs the test suite
# For development: make quality (ruff lint + format check), make test-fast (skips the slow kill/multi-process tests).
PYTHON ?= python3
STAMP := .install.stamp

.PHONY: install demo test test-fast quality

install: $(STAMP)

$(STAMP): setup.py constraints.txt .ci/apt-packages.txt
	bash .ci/install.sh $(PYTHON)
	touch $(STAMP)

demo: $(STAMP)
	kiop-hf train

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow" tests

quality: $(STAMP)
	$(PYTHON) -m ruff check kiop_hf tests benchmarks examples setup.py
	$(PYTHON) -m ruff format --check kiop_hf tests benchmarks examples setup.py

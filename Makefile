# Two commands do all the set-up on a fresh machine (Debian, Python 3.10+, root or sudo for apt):
#   make demo   installs what is missing, then runs the main job on the embedded default
#   make test   installs what is missing, then runs the test suite
# For development: make quality (ruff lint + format check), make test-fast (skips the slow kill/multi-process tests).
# make reference-speed: kiop_hf beside the reference KiOP code (cloned into build/), benchmarks/reference_speed.py.
PYTHON ?= python3
STAMP := .install.stamp

REFERENCE_REPO ?= https://github.com/LiQiiiii/Encapsulating-Knowledge-In-One-Prompt
REFERENCE_DIR ?= build/kiop-reference

.PHONY: install demo test test-fast quality reference-speed

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

reference-speed: $(STAMP)
	test -d $(REFERENCE_DIR) || git clone $(REFERENCE_REPO) $(REFERENCE_DIR)
	$(PYTHON) -m pip install -q kornia termcolor lmdb
	$(PYTHON) benchmarks/reference_speed.py --reference-dir $(REFERENCE_DIR) --memory --profile \
		--json benchmarks/results/reference_speed.json

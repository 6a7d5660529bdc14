# Two commands do all the set-up on a fresh machine (Debian, Python 3.10+, root or sudo for apt):
#   make demo   installs what is missing, then runs the main job on the embedded default
#   make test   installs what is missing, then runs the test suite
PYTHON ?= python3
STAMP := .install.stamp

.PHONY: install demo test

install: $(STAMP)

$(STAMP): setup.py constraints.txt .ci/apt-packages.txt
	bash .ci/install.sh $(PYTHON)
	touch $(STAMP)

demo: $(STAMP)
	kiop-hf train

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

# Two commands do all the set-up: `make demo` (default recipe on bundled digits) and `make test`.
# Each creates the virtual environment on first use and installs vsd into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all venv distill-demo bench smoke clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,photos,plots]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) tools/train.py --set overwrite=true

distill-demo: $(STAMP)
	$(PY) tools/distill.py --set overwrite=true

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) tools/bench.py

# Every method, distiller and CIFAR/ImageNet zoo recipe for a few steps on the present device (CUDA when
# available); add SMOKE_ARGS=--tiny on a CPU-only machine.
smoke: $(STAMP)
	$(PY) tools/smoke.py $(SMOKE_ARGS)

clean:
	rm -rf $(VENV) runs *.egg-info

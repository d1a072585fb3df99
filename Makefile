# The README's two commands are `make demo` and `make test`; both create or refresh .venv and use it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench docs clean-venv

$(STAMP): setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

DEMO_CONFIG := lib_nb/assets/modadd_p113/lib_build.yaml

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/lib_build $(DEMO_CONFIG) --out out/demo --force
	HF_HUB_OFFLINE=1 $(BIN)/python -c "from lib_nb.widgets import explore; from lib_nb.build import BuildConfig, load_model; \
	  from lib_nb.analysis import modadd_node_data; m, _ = load_model(BuildConfig.from_yaml('$(DEMO_CONFIG)'), device='cpu'); \
	  print('explorer view written to', explore('out/demo', data=modadd_node_data(m)).to_html('out/demo/explorer.html'))"

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tools/run_tests.py

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run_all.py

# The docs site, built offline into _docs/ (tools/build_docs.py; `nbdev_docs` does the same where Quarto is
# installed). DOCS_FLAGS="slow" also runs the `#| slow` cells.
docs: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python tools/build_docs.py --flags "$(DOCS_FLAGS)"

clean-venv:
	rm -rf $(VENV)

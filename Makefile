# occ: `make demo` and `make test` are the only commands a fresh machine needs.
VENV   := .venv
PY     := $(VENV)/bin/python
OCC    := $(VENV)/bin/occ
UV     := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v uv >/dev/null 2>&1 || test -x $(HOME)/.local/bin/uv || python3 -m pip install --quiet --user uv
	@test -d $(VENV) || $(UV) venv --quiet --python python3 $(VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -e '.[dev]'
	@touch $(STAMP)

# The main job end to end on the embedded MNIST digits: baseline, compress, eval.
demo: install
	@test -f runs/demo/baseline.pt || $(OCC) train lenet5 --data mnist5k --out runs/demo/baseline.pt
	$(OCC) compress recipes/demo.yaml
	$(OCC) eval runs/demo/model.occ

test: install
	$(PY) -m pytest

# ruff, the import layers (pyproject's [tool.importlinter]), and no import cycles.
lint: install
	$(VENV)/bin/ruff check occ tests scripts
	$(VENV)/bin/lint-imports
	$(PY) scripts/import_graph.py

# Reruns every benchmark at full length and rewrites its JSON under scripts/results/ (the
# published figures). bench_coder's NNCodec column needs OCC_NNCODEC_PYTHON=/path/to/python
# (a Python with nncodec); without it the column is written as absent.
bench: install
	for s in scripts/bench_*.py; do $(PY) $$s || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache

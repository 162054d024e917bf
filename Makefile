# The README's two commands: `make run` (install + main job end to end) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch, installed before anything that depends on torch so no CUDA build is pulled.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install run test lint bench serve

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/graphrec run --config conf/default.yaml

test: install
	$(BIN)/ruff check graphrec training serving tests benchmarks
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check graphrec training serving tests benchmarks
	$(BIN)/ruff format --check graphrec training serving tests benchmarks

bench: install
	$(BIN)/python benchmarks/graph_build.py

# The ranking API over the pair the main job published (run `make run` first): `graphrec serve` on
# http://127.0.0.1:8000 (open /preview?user_id=u0000001 for a user's ranked homepage, /docs for the API).
serve: install
	@test -f artifacts/store/embeddings/LATEST || { echo "no published pair in artifacts/store: run \`make run\` first"; exit 2; }
	$(BIN)/graphrec serve --config conf/serve.yaml

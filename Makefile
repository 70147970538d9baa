# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-long test-fast bench accuracy clean

install: $(STAMP)

# Reinstall when the dependencies change; torch/torchvision come pinned from constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[demo,test]'
	# pixql's bytecode, as pip writes it for an installed package: an editable install has none,
	# and where PYTHONDONTWRITEBYTECODE is set every `pixql` process would compile it (~0.2 s).
	$(BIN)/python -m compileall -q src/pixql
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pixql demo --out demo_out

# Two test processes (pytest-xdist), each test file whole in one of them (its module fixtures
# built once): half the suite's time is one core's Python, so two fill the two cores here.
test: $(STAMP)
	$(BIN)/pytest -q -rs -n 2 --dist loadfile --no-loadscope-reorder --durations=8 -m "not long"

# The runs over whole photo sets that make test leaves out for time (marked `long`).
test-long: $(STAMP)
	$(BIN)/pytest -q -rs -m long

test-fast: $(STAMP)
	$(BIN)/pytest -q -rs -n 2 --dist loadfile -m "not slow"

# pixql against a plain timm + torch script on the same photos (see BENCHMARKS.md).
bench: $(STAMP)
	$(BIN)/python bench/run.py --data ../shared/datasets
	$(BIN)/python bench/decode.py --data ../shared/datasets

# Accuracy of the default BUILD on the real photo sets' test splits (README, "Measured accuracy"; ~5 min).
accuracy: $(STAMP)
	$(BIN)/python bench/accuracy.py --data ../shared/datasets --mode default --only cats fashion clothing flowers \
		--labels label div_n

clean:
	rm -rf $(VENV) demo_out pixql_output .pytest_cache

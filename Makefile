# busnb: `make demo` runs the main job on the phantom, `make test` runs the tests.
# Both create .venv on first use (Python 3.10+; torch 2.14.1 is a large download on a fresh machine).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.busnb-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: demo test venv run-cpu run-gpu baselines-cpu strip clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/busnb run --profile smoke

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests --nbval-lax notebooks

run-cpu: $(STAMP)
	$(BIN)/busnb run --profile cpu

run-gpu: $(STAMP)
	$(BIN)/busnb run --profile gpu

# the README's baseline comparison on BUSI (hours on 2 CPU cores): one table per labeled ratio
baselines-cpu: $(STAMP)
	$(BIN)/busnb run --profile cpu --notebooks 05 06 --variants baselines dual_teacher --ratios 2.5 10 --seeds 0

# strip outputs before committing notebooks
strip: $(STAMP)
	$(BIN)/python -m busnb.nbstrip notebooks/*.ipynb

clean:
	rm -rf runs cache .pytest_cache

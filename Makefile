# busnb: `make demo` runs the main job on the phantom, `make test` runs the tests.
# Both create .venv on first use (Python 3.10+; torch 2.14.1 is a large download on a fresh machine).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.busnb-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: demo test venv run-cpu run-gpu baselines-cpu device-sweep strip clean

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

# On a GPU machine lent for a few minutes, with busnb importable (README, *Speed*): pseudo-label the dataset on every
# CPU core, run the sweep for at most DEVICE_SECONDS (finished runs are kept, unfinished ones dropped), and pack the
# runs' small text files into $(OUT)/device-sweep.tar.gz (no checkpoints). No venv: it uses the machine's Python.
DEVICE_SWEEP   ?= --profile gpu --variants supervised +static dual_teacher --ratios 2.5 --seeds 0 1 2 --per-gpu 9
DEVICE_DATASET ?= busi
DEVICE_SECONDS ?= 460
DEVICE_RUNS    ?= runs/device-sweep
OUT            ?= runs/device-out
device-sweep:
	-nvidia-cuda-mps-control -d 2>/dev/null
	$(PYTHON) -m busnb pseudo-label --dataset $(DEVICE_DATASET) --part all --workers 0
	-timeout $(DEVICE_SECONDS) $(PYTHON) -m busnb sweep $(DEVICE_SWEEP) --dataset $(DEVICE_DATASET) --out $(DEVICE_RUNS)
	$(PYTHON) -m busnb.results --pack $(DEVICE_RUNS) $(OUT)/device-sweep.tar.gz

# strip outputs before committing notebooks
strip: $(STAMP)
	$(BIN)/python -m busnb.nbstrip notebooks/*.ipynb

clean:
	rm -rf runs cache .pytest_cache

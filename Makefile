# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# WordNet 3.0 for METEOR, built offline from Debian's packages (no run-time download).
export NLTK_DATA := $(CURDIR)/.cache/nltk_data

.PHONY: setup browser lint test test-fast demo tiny-checkpoint bench clean

setup: $(STAMP)

# Re-install only when requirements.txt changes; a second `make setup` is instant.
$(STAMP): requirements.txt
	@dpkg -s wordnet-base wordnet-sense-index espeak-ng rubberband-cli >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    wordnet-base wordnet-sense-index espeak-ng rubberband-cli >/dev/null; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m Evaluation.metrics.wordnet --out $(NLTK_DATA)
	$(PY) -c "import torch, transformers, diffusers; from transformers import LlamaForCausalLM, ViTModel, HubertModel, MusicgenForConditionalGeneration; from diffusers import AudioLDM2Pipeline; print('imports ok: torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $(STAMP)

# Debian's Chromium for the browser test (playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(PY) -m ruff check .

# Everything: lint, then the whole suite (the learning test and the browser test included), on
# two workers: the learning test's training runs on one core while the rest runs on the other.
test: setup browser lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile

# The quick loop for contributors (about a minute): no slow or browser tests.
test-fast: setup lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -m "not slow and not browser"

# The web demo on the tiny model. By default it serves the trained tiny checkpoint the repository
# ships (assets/tiny_m2ugen: tuned weights + config, a few MB; the page is up within a minute).
# `make demo TRAIN=1` instead builds synthetic data and trains the tiny model through the three
# stages first (about 14 minutes on two cores; reused by later `make demo TRAIN=1` runs).
TINY_DIR := ckpts/tiny
SHIPPED := assets/tiny_m2ugen
demo: setup
ifeq ($(TRAIN),1)
	test -f $(TINY_DIR)/synthetic/split.json || $(PY) -m data.synthetic --out $(TINY_DIR)/synthetic --seed 0
	bash train.sh --preset tiny --data_root $(TINY_DIR)/synthetic --output_dir $(TINY_DIR) --resume
	$(PY) gradio_app.py --model $(TINY_DIR)/stage3
else
	$(PY) gradio_app.py --model $(SHIPPED)
endif

# Rebuild the shipped tiny checkpoint from scratch with the documented commands (data seed 0, the
# plain recipe on one thread, as the learning test trains), then record the metrics it reaches.
# Commit the four files it writes to $(SHIPPED) (README.md there says what they are).
SHIP_WORK := ckpts/tiny-ship
tiny-checkpoint: setup
	rm -rf $(SHIP_WORK)
	$(PY) -m data.synthetic --out $(SHIP_WORK)/synthetic --seed 0
	OMP_NUM_THREADS=1 bash train.sh --preset tiny --data_root $(SHIP_WORK)/synthetic --output_dir $(SHIP_WORK)
	$(PY) -m app.shipped --stage $(SHIP_WORK)/stage3 --data_seed 0 --out $(SHIPPED)
	$(PY) -m Evaluation.synthetic --model $(SHIPPED) --data_root $(SHIP_WORK)/synthetic \
	  --output $(SHIPPED)/metrics.json > /dev/null

bench: setup
	$(PY) benchmarks/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache

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

.PHONY: setup browser lint test test-fast demo bench clean

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

# Tiny end-to-end demo: synthetic data, three training stages (once; reused), then the web app.
TINY_DIR := ckpts/tiny
demo: setup
	test -f $(TINY_DIR)/synthetic/split.json || $(PY) -m data.synthetic --out $(TINY_DIR)/synthetic --seed 0
	bash train.sh --preset tiny --data_root $(TINY_DIR)/synthetic --output_dir $(TINY_DIR) --resume
	$(PY) gradio_app.py --model $(TINY_DIR)/stage3

bench: setup
	$(PY) benchmarks/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache

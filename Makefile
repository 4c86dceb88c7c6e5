# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test bench clean

setup: $(STAMP)

# Re-install only when requirements.txt changes; a second `make setup` is instant.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -c "import torch, transformers, diffusers; from transformers import LlamaForCausalLM, ViTModel, HubertModel, MusicgenForConditionalGeneration; from diffusers import AudioLDM2Pipeline; print('imports ok: torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache

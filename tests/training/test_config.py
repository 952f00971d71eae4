"""Training configs: YAML -> typed dataclasses, overrides, errors, dump; every shipped recipe parses."""
import inspect
from pathlib import Path

import pytest

from onetok.config import TiTokConfig
from onetok.training.config import ConfigError, TrainConfig, config_from_dict, load_config, save_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
PAPER_RECIPES = [f"titok_{k}_stage{s}" for k in ("l32", "b64", "s128") for s in (1, 2)] + [
    "titok_bl64_vq8k", "titok_bl128_vq8k", "titok_sl256_vq8k", "titok_ll32_vae_c16", "titok_bl64_vae_c16",
    "titok_bl128_vae_c16", "generator_titok_l32", "generator_titok_b64", "generator_titok_s128",
    "cpu_quickstart_tokenizer", "cpu_quickstart_generator"]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_types_and_overrides(tmp_path):
    path = write(tmp_path, """
experiment: {output_dir: out, max_train_steps: 10}
optimizer: {lr: 1e-4, betas: [0.9, 0.99]}
training: {mixed_precision: bf16}
model: {vq_model: {num_latent_tokens: 32}}
""")
    config = load_config(path, ["training.batch_size=4", "optimizer.lr=3e-4", "optimizer.discriminator_lr=null",
                                "model.vq_model.num_latent_tokens=64", "+model.init_weight=stage1/final",
                                "optimizer.betas=[0.5, 0.9]", "training.use_ema=false", "experiment.name=2024"])
    assert config.experiment.name == "2024"
    assert config.optimizer.lr == 3e-4 and isinstance(config.optimizer.lr, float)
    assert config.optimizer.betas == (0.5, 0.9)
    assert config.training.batch_size == 4 and config.training.use_ema is False
    assert config.training.mixed_precision == "bf16"
    assert config.model == {"vq_model": {"num_latent_tokens": 64}, "init_weight": "stage1/final"}
    assert config.experiment.max_train_steps == 10 and config.experiment.seed == 42  # default kept


@pytest.mark.parametrize("override, message", [
    ("training.batchsize=4", "unknown config key 'training.batchsize'"),
    ("model.vq_model.codebok_size=8", r"unknown config key 'model.vq_model.codebok_size' \(write \+"),
    ("nothing.at.all=1", "unknown config key 'nothing'"),
    ("training.batch_size=four", "training.batch_size must be an integer"),
    ("training.use_ema=maybe", "must be true or false"),
    ("optimizer.betas=[0.9]", "list of 2 values"),
    ("training.mixed_precision=fp8", "mixed_precision must be no, fp16 or bf16"),
    ("experiment.keep_last=0", "keep_last must be at least 1"),
    ("training.batch_size", "not of the form a.b.c=value"),
    ("optimizer.betas=[0.9,", "is not valid YAML"),
])
def test_bad_overrides_name_the_problem(tmp_path, override, message):
    path = write(tmp_path, "model: {vq_model: {codebook_size: 4096}}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config key 'experiment.outdir'"):
        load_config(write(tmp_path, "experiment: {outdir: x}\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "experiment: [unclosed\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_dict({"training": [1, 2]})


def test_dump_round_trips(tmp_path):
    config = config_from_dict({"optimizer": {"betas": [0.9, 0.96]}, "losses": {"label_smoothing": 0.1}},
                              ["experiment.output_dir=somewhere"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_all_paper_recipes_are_shipped():
    assert {p.stem for p in CONFIGS} >= set(PAPER_RECIPES)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_parses_and_fits_its_task(path):
    from onetok.training.losses import MaskedTokenLoss, ReconstructionLoss

    config = load_config(path)
    assert isinstance(config, TrainConfig) and config.experiment.task
    assert config.dataset["preprocessing"]["crop_size"] in (128, 256)
    if "generator" in config.model:
        allowed = set(inspect.signature(MaskedTokenLoss).parameters)
        assert config.model["generator"]["num_attention_heads"] > 0
    else:
        tree = {"model": config.model, "dataset": config.dataset}
        titok = TiTokConfig.from_dict(tree)
        assert titok.crop_size == config.dataset["preprocessing"]["crop_size"]
        allowed = set(inspect.signature(ReconstructionLoss).parameters)
    assert set(config.losses) <= allowed, set(config.losses) - allowed


def test_paper_numbers_in_recipes():
    stage1 = load_config(CONFIGS[0].parent / "titok_l32_stage1.yaml")
    assert (stage1.optimizer.lr, stage1.optimizer.betas, stage1.optimizer.weight_decay) == (1e-4, (0.9, 0.99), 1e-4)
    assert (stage1.lr_scheduler.warmup_steps, stage1.lr_scheduler.end_lr) == (10_000, 1e-5)
    assert stage1.experiment.max_train_steps == 1_000_000 and stage1.training.mixed_precision == "fp16"
    stage2 = load_config(CONFIGS[0].parent / "titok_b64_stage2.yaml")
    assert stage2.losses["discriminator_start"] == 20_000 and stage2.losses["discriminator_weight"] == 0.01
    assert stage2.model["vq_model"]["commitment_cost"] == 0.0 and stage2.lr_scheduler.warmup_steps == 5_000
    generator = load_config(CONFIGS[0].parent / "generator_titok_b64.yaml")
    assert (generator.optimizer.lr, generator.optimizer.betas, generator.optimizer.weight_decay) == (
        2e-4, (0.9, 0.96), 0.03)
    assert generator.training.mixed_precision == "bf16" and generator.training.batch_size == 64

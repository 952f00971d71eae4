"""MaskGIT generator training on token shards of real photos, and the seeded sampler."""
import csv
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from onetok import MaskGIT, TiTok
from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.data.tokens import TokenizerMismatchError, save_token_shard, tokenizer_fingerprint, write_token_manifest
from onetok.sampling import generate_seeded, sample_seed
from onetok.training.config import config_from_dict
from onetok.training.generator_task import GeneratorRunError, build_run
from onetok.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_GENERATOR = {"model_type": "ViT", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 128, "dropout": 0.1, "attn_drop": 0.1, "num_steps": 4,
                  "class_label_dropout": 0.1, "randomize_temperature": 1.0, "guidance_scale": 2.0,
                  "guidance_decay": "constant"}




@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    torch.manual_seed(0)
    return TiTok.from_config("titok_tiny").save_pretrained(tmp_path_factory.mktemp("tokenizer"))


def make_token_folder(root, tokenizer_dir, photos, num_classes=2, fingerprint=None):
    """The photos and their flips through the tokenizer, labelled round-robin into classes."""
    tokenizer = TiTok.from_pretrained(tokenizer_dir)
    images = torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), 64)) for p in photos])
    with torch.no_grad():
        ids = tokenizer.tokenize(torch.cat([images, images.flip(-1)]))
    labels = np.arange(len(ids)) % num_classes
    cfg = tokenizer.config
    save_token_shard(root, 0, ids, labels, cfg.codebook_size)
    fingerprint = fingerprint or tokenizer_fingerprint(cfg.to_dict(), tokenizer.state_dict())
    write_token_manifest(root, fingerprint, cfg.num_latent_tokens, cfg.codebook_size,
                         [f"class{i}" for i in range(num_classes)])
    return root


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory, tokenizer_dir, sample_photos):
    return make_token_folder(tmp_path_factory.mktemp("tokens"), tokenizer_dir, sample_photos)


def generator_config(output_dir, tokens, tokenizer, *overrides):
    tree = {
        "experiment": {"task": "generator", "output_dir": str(output_dir), "max_train_steps": 6, "save_every": 3,
                       "log_every": 1, "preview_every": 3, "seed": 5, "log_with": "none"},
        "optimizer": {"lr": 2e-3, "betas": [0.9, 0.96], "weight_decay": 0.03},
        "lr_scheduler": {"warmup_steps": 2, "end_lr": 1e-4},
        "training": {"batch_size": 8, "use_ema": True, "ema_decay": 0.9},
        "model": {"generator": dict(TINY_GENERATOR)},
        "losses": {"label_smoothing": 0.1, "loss_weight_unmasked_token": 0.1},
        "dataset": {"tokens": str(tokens), "tokenizer": str(tokenizer) if tokenizer else None, "preview_seeds": [0]},
    }
    return config_from_dict(tree, list(overrides))


def metrics(output_dir):
    with open(output_dir / "logs" / "metrics.csv", newline="") as f:
        return {int(row["step"]): row for row in csv.DictReader(f)}


def test_loss_goes_down_and_export_names_tokenizer_and_classes(tmp_path, token_dir, tokenizer_dir, sample_photos):
    config = generator_config(tmp_path, token_dir, tokenizer_dir, "experiment.max_train_steps=16",
                              "experiment.save_every=16", "experiment.preview_every=8", "lr_scheduler.end_lr=1e-3")
    task, dataset = build_run(config)
    assert len(dataset) == 2 * len(sample_photos) and task.preview_classes == [0, 1]
    assert Trainer(config, task, dataset).train()

    rows = [row for _, row in sorted(metrics(tmp_path).items())]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 16 and "masked_accuracy" in rows[0]
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    assert float(rows[-1]["masked_accuracy"]) > float(rows[0]["masked_accuracy"])
    assert (tmp_path / "previews" / "step-00000008.png").is_file()  # 1 seed x 2 classes of 64 px
    assert Image.open(tmp_path / "previews" / "step-00000008.png").size == (2 * 66 + 2, 68)

    exported = MaskGIT.from_pretrained(tmp_path / "final")
    cfg = exported.config
    assert (cfg.condition_num_classes, cfg.image_seq_len, cfg.codebook_size) == (2, 32, 256)
    tokenizer = TiTok.from_pretrained(tokenizer_dir)
    assert cfg.extra["dataset"]["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer.config.to_dict(),
                                                                                  tokenizer.state_dict())
    assert cfg.extra["dataset"]["class_names"] == ["class0", "class1"]


def test_resume_is_exact(tmp_path, token_dir, tokenizer_dir):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    config = generator_config(whole, token_dir, None)
    Trainer(config, *build_run(config)).train()

    config = generator_config(parts, token_dir, None)
    task, dataset = build_run(config)
    step_of = task.training_step

    def stop_during_step_3(batch, step):  # like Ctrl-C: the trainer finishes the step, saves, stops
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_of(batch, step)

    task.training_step = stop_during_step_3
    assert Trainer(config, task, dataset).train() is False
    Trainer(config, *build_run(config), resume=True).train()

    expected, resumed = metrics(whole), metrics(parts)
    assert sorted(resumed) == list(range(1, 7))
    for step in (4, 5, 6):
        assert resumed[step]["loss"] == expected[step]["loss"], step
    a, b = MaskGIT.from_pretrained(whole / "final"), MaskGIT.from_pretrained(parts / "final")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_one_class_trains_an_unconditional_model(tmp_path, tokenizer_dir, sample_photos):
    tokens = make_token_folder(tmp_path / "tokens", tokenizer_dir, sample_photos[:3], num_classes=1)
    config = generator_config(tmp_path / "run", tokens, tokenizer_dir, "experiment.max_train_steps=2")
    task, dataset = build_run(config)
    assert task.class_label_dropout == 0.0
    Trainer(config, task, dataset).train()
    cfg = MaskGIT.from_pretrained(tmp_path / "run" / "final").config
    assert (cfg.condition_num_classes, cfg.guidance_scale, cfg.guidance_decay) == (1, 0.0, "constant")


def test_tokens_of_another_tokenizer_are_refused(tmp_path, tokenizer_dir, sample_photos):
    other = TiTok.from_config("titok_tiny").config.to_dict()
    other["model"]["vq_model"]["commitment_cost"] = 0.5
    tokens = make_token_folder(tmp_path / "tokens", tokenizer_dir, sample_photos[:2],
                               fingerprint=tokenizer_fingerprint(other, TiTok.from_pretrained(tokenizer_dir).state_dict()))
    with pytest.raises(TokenizerMismatchError, match="pretokenize the data again"):
        build_run(generator_config(tmp_path / "run", tokens, tokenizer_dir))


def test_config_that_contradicts_the_tokens_is_refused(tmp_path, token_dir, tokenizer_dir):
    config = generator_config(tmp_path, token_dir, tokenizer_dir, "+model.generator.image_seq_len=64")
    with pytest.raises(GeneratorRunError, match="image_seq_len is 64 but the token folder has 32"):
        build_run(config)
    config = generator_config(tmp_path, token_dir, tokenizer_dir, "+model.generator.condition_num_classes=1")
    with pytest.raises(GeneratorRunError, match="has 2 classes"):
        build_run(config)


# ------------------------------------------------------------------------------ sampling


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(1)
    return MaskGIT.from_config("generator_titok_tiny").eval()


SETTINGS = [dict(guidance_scale=2.0, guidance_decay=d, randomize_temperature=2.0, num_sample_steps=4)
            for d in ("constant", "linear", "power-cosine")]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s["guidance_decay"])
def test_batched_guidance_gives_the_ids_of_two_separate_passes(generator, settings):
    condition = torch.tensor([0, 4, 9, 9, 2])
    runs = []
    for batched in (True, False):
        torch.manual_seed(3)
        runs.append(generator.generate(condition, batched_guidance=batched, **settings))
    assert torch.equal(*runs)
    assert (runs[0] < 256).all() and len(set(map(tuple, runs[0].tolist()))) == 5


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s["guidance_decay"])
def test_seeded_sampling_matches_the_reference_row_by_row_whatever_the_chunks(generator, settings):
    condition = torch.tensor([0, 4, 9, 9, 2])
    seeds = [sample_seed(11, i) for i in range(len(condition))]
    one_batch = generate_seeded(generator, condition, seeds, **settings)
    chunked = generate_seeded(generator, condition, seeds, chunk_size=2, batched_guidance=False, **settings)
    assert torch.equal(one_batch, chunked)
    reference = []
    for c, seed in zip(condition, seeds):
        torch.manual_seed(seed)
        reference.append(generator.generate(c[None], **settings))
    assert torch.equal(one_batch, torch.cat(reference))
    # a sample's ids do not depend on its neighbours
    assert torch.equal(generate_seeded(generator, condition[2:4], seeds[2:4], **settings), one_batch[2:4])


def test_seeded_sampling_rejects_bad_arguments(generator):
    with pytest.raises(ValueError, match="2 seeds for 3 samples"):
        generate_seeded(generator, torch.tensor([0, 1, 2]), [1, 2])
    with pytest.raises(TypeError, match="guidance"):
        generate_seeded(generator, torch.tensor([0]), [1], guidance=3.0)

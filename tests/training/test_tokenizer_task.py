"""The tokenizer recipes end to end on real photos with tiny models: losses go down, stages chain."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from onetok import MaskGITVQGAN, TiTok
from onetok.data.datasets import build_dataset
from onetok.data.transforms import build_transform
from onetok.training.config import config_from_dict
from onetok.training.tokenizer_task import TokenDropConfig, build_task
from onetok.training.trainer import Trainer, TrainingError

VQ = {"codebook_size": 64, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
      "vit_enc_model_size": "tiny", "vit_dec_model_size": "tiny", "num_latent_tokens": 8,
      "pixel_hidden_channels": 32, "pixel_z_channels": 16}
TEACHER = dict(hidden_channels=32, z_channels=16, resolution=64, num_embeddings=1024, embedding_dim=16)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("photos")
    for i, array in enumerate(sample_photos):
        Image.fromarray(array).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    MaskGITVQGAN(**TEACHER).save_pretrained(folder)
    return folder


def run(tmp_path, photo_folder, task, steps=12, losses=None, model=None, save_every=None):
    tree = {
        "experiment": {"task": task, "output_dir": str(tmp_path / task), "max_train_steps": steps,
                       "save_every": save_every or steps, "log_every": 1, "preview_every": steps, "log_with": "none", "seed": 0},
        "model": model or {"vq_model": dict(VQ)},
        "losses": losses or {},
        "dataset": {"preprocessing": {"crop_size": 64}},
        "optimizer": {"lr": 2e-3},
        "lr_scheduler": {"warmup_steps": 0, "end_lr": 2e-3},
        "training": {"batch_size": 4, "use_ema": True},
    }
    config = config_from_dict(tree)
    dataset = build_dataset(photo_folder, transform=build_transform(True, 64, scale=(0.5, 1.0)))
    assert Trainer(config, build_task(config), dataset).train()
    with open(tmp_path / task / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # the GAN term joins later and is noisy: follow the reconstruction term
    return [float(r["reconstruction_loss"]) for r in rows], tmp_path / task / "final"


def improved(losses):
    return np.mean(losses[-3:]) < np.mean(losses[:3])



def resume_copy(run_dir, parts, leftovers, photo_folder) -> Trainer:
    """A copy of a finished run without `leftovers` (its last checkpoint and final), resumed."""
    shutil.copytree(run_dir, parts)
    for leftover in leftovers:
        shutil.rmtree(parts / leftover)
    tree = yaml.safe_load((parts / "config.yaml").read_text())
    tree["experiment"]["output_dir"] = str(parts)
    config = config_from_dict(tree)
    dataset = build_dataset(photo_folder, transform=build_transform(True, 64, scale=(0.5, 1.0)))
    return Trainer(config, build_task(config), dataset, resume=True)

def test_stage1_then_stage2(tmp_path, photo_folder, teacher_dir):
    losses, stage1 = run(tmp_path, photo_folder, "titok_stage1", model={"vq_model": dict(VQ), "teacher": str(teacher_dir)})
    assert losses[0] == pytest.approx(np.log(1024), abs=0.3)  # CE starts near ln(1024)
    assert improved(losses)
    first = TiTok.from_pretrained(stage1)
    assert not first.config.finetune_decoder

    losses, stage2 = run(tmp_path, photo_folder, "titok_stage2", steps=8,
                         model={"vq_model": dict(VQ), "teacher": str(teacher_dir), "init_weight": str(stage1)},
                         losses={"perceptual_loss": "none", "discriminator_start": 4, "discriminator_weight": 0.1})
    assert improved(losses)
    second = TiTok.from_pretrained(stage2)
    # encoder, codebook and latent tokens frozen; the decoder moved
    for key in ("latent_tokens", "encoder.conv_out.weight", "quantize.embedding.weight"):
        assert torch.equal(first.state_dict()[key], second.state_dict()[key])
    assert not torch.equal(first.state_dict()["decoder.ffn.0.weight"], second.state_dict()["decoder.ffn.0.weight"])
    assert second.detokenize(second.tokenize(torch.rand(1, 3, 64, 64))).shape == (1, 3, 64, 64)


def test_stage2_needs_the_stage1_weights(tmp_path, photo_folder, teacher_dir):
    with pytest.raises(TrainingError, match="init_weight"):
        run(tmp_path, photo_folder, "titok_stage2", model={"vq_model": dict(VQ), "teacher": str(teacher_dir)})


@pytest.mark.parametrize("mode", ["vq", "vae"])
def test_single_stage_with_gan(tmp_path, photo_folder, mode):
    vq = dict(VQ, quantize_mode=mode)
    losses, final = run(tmp_path, photo_folder, "titok_single_stage", model={"vq_model": vq},
                        losses={"perceptual_loss": "none", "discriminator_start": 6, "discriminator_weight": 0.1,
                                "quantizer_weight": 1.0, "quantize_mode": mode})
    assert improved(losses)
    model = TiTok.from_pretrained(final)
    assert model.config.quantize_mode == mode and not model.config.is_legacy


def test_vqgan_teacher_training(tmp_path, photo_folder):
    losses, final = run(tmp_path, photo_folder, "vqgan", steps=8,
                        model={"vqgan": dict(TEACHER)}, losses={"perceptual_loss": "none", "discriminator_weight": 0.0,
                                                               "quantizer_weight": 1.0})
    assert improved(losses)
    teacher = MaskGITVQGAN.from_pretrained(final)
    assert teacher.encode(torch.rand(1, 3, 64, 64)).shape == (1, 16)


def test_single_stage_warm_start_seeds_the_codebook_from_the_latents(tmp_path, photo_folder):
    warm_start = {"continuous_steps": 6, "kmeans_steps": 3}
    losses, final = run(tmp_path, photo_folder, "titok_single_stage", steps=10,
                        model={"vq_model": dict(VQ), "warm_start": warm_start},
                        losses={"perceptual_loss": "none", "discriminator_weight": 0.0})
    assert all(np.isfinite(losses))
    with open(tmp_path / "titok_single_stage" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # no lookup (no ids to count) during the warm-up; afterwards ids from the seeded codebook
    assert [r["codes_used"] == "" for r in rows] == [True] * 6 + [False] * 4
    model = TiTok.from_pretrained(final)
    ids = model.tokenize(torch.from_numpy(np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sorted(photo_folder.iterdir())]
    )).permute(0, 3, 1, 2).float() / 255)
    # a random 64-code codebook maps every image to the same ids; the seeded one does not
    assert (ids != ids[0]).any()
    # the exported (EMA) codebook is the seeded one: unit rows, where the random init's are ~0.03 long
    assert (model.quantize.embedding.weight.norm(dim=1) > 0.5).all()


def test_warm_start_rejects_unknown_keys(tmp_path, photo_folder):
    with pytest.raises(TrainingError, match="unknown keys"):
        run(tmp_path, photo_folder, "titok_single_stage", model={"vq_model": dict(VQ), "warm_start": {"steps": 3}})


def test_warm_start_resumes_exactly_inside_the_kmeans_window(tmp_path, photo_folder):
    """Stopped at step 4 while latents are being collected (steps 2-5), resumed: the same final model."""
    warm_start = {"continuous_steps": 6, "kmeans_steps": 4}
    _, whole = run(tmp_path / "whole", photo_folder, "titok_single_stage", steps=8,
                   model={"vq_model": dict(VQ), "warm_start": warm_start},
                   losses={"perceptual_loss": "none", "discriminator_weight": 0.0}, save_every=4)
    parts = tmp_path / "parts" / "titok_single_stage"
    resumed = resume_copy(whole.parent, parts, ("checkpoint-8", "final"), photo_folder)
    assert resumed.state.step == 4 and len(resumed.task.seeder.latents) == 2  # steps 2 and 3 were collected
    assert resumed.train()
    expected, got = load_file(whole / "model.safetensors"), load_file(parts / "final" / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def photo_batch(photo_folder, size=64):
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in sorted(photo_folder.iterdir())]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def test_token_drop_keep_masks_are_prefixes_in_range():
    uniform = TokenDropConfig.from_dict({"min_tokens": 2, "max_tokens": 6}, num_latent_tokens=8)
    short = TokenDropConfig.from_dict({"min_tokens": 2, "max_tokens": 6, "distribution": "short"}, 8)
    torch.manual_seed(0)
    masks = uniform.keep_mask(4000, 8, "cpu")
    lengths = masks.sum(1)
    assert masks.shape == (4000, 8) and torch.equal(masks, torch.arange(8) < lengths[:, None])  # prefixes
    assert set(lengths.tolist()) == {2, 3, 4, 5, 6}
    assert short.keep_mask(4000, 8, "cpu").sum(1).float().mean() < lengths.float().mean() - 0.3
    full = TokenDropConfig.from_dict({"max_tokens": 1, "full_length_fraction": 0.5}, 8).keep_mask(4000, 8, "cpu")
    assert set(full.sum(1).tolist()) == {1, 8} and 0.45 < full.all(1).float().mean() < 0.55
    for bad in ({"min_tokens": 0}, {"max_tokens": 9}, {"distribution": "long"}, {"length": 3}):
        with pytest.raises(TrainingError, match="token_drop"):
            TokenDropConfig.from_dict(bad, 8)


@pytest.mark.parametrize("mode", ["vq", "vae"])
def test_single_stage_with_token_drop_decodes_every_prefix(tmp_path, photo_folder, mode):
    vq = dict(VQ, quantize_mode=mode, decoder_head="conv" if mode == "vq" else "linear")
    losses, final = run(tmp_path, photo_folder, "titok_single_stage",
                        model={"vq_model": vq, "token_drop": {"min_tokens": 1}},
                        losses={"perceptual_loss": "none", "discriminator_weight": 0.0, "quantize_mode": mode})
    assert improved(losses)
    model = TiTok.from_pretrained(final)
    assert model.config.variable_length and "decoder.null_token" in model.state_dict()
    images = photo_batch(photo_folder)
    full = model.tokenize(images)
    decoded = {}
    for k in range(1, 9):
        tokens = model.tokenize(images, num_tokens=k)
        assert torch.equal(tokens, full[:, :k])
        decoded[k] = model.detokenize(tokens)
        assert decoded[k].shape == images.shape and torch.isfinite(decoded[k]).all()
    assert not torch.allclose(decoded[1], decoded[8])  # the tokens past the first one change the picture


def test_stage1_then_stage2_with_token_drop(tmp_path, photo_folder, teacher_dir):
    drop = {"min_tokens": 1, "distribution": "short"}
    losses, stage1 = run(tmp_path, photo_folder, "titok_stage1",
                         model={"vq_model": dict(VQ), "teacher": str(teacher_dir), "token_drop": drop})
    assert improved(losses)
    first = TiTok.from_pretrained(stage1)
    assert first.config.variable_length
    logits = first.decode_tokens(first.tokenize(photo_batch(photo_folder)[:2], num_tokens=3))
    assert logits.shape == (2, 1024, 4, 4)  # proxy-code logits from a 3-token prefix
    _, stage2 = run(tmp_path, photo_folder, "titok_stage2", steps=4,
                    model={"vq_model": dict(VQ), "teacher": str(teacher_dir), "init_weight": str(stage1),
                           "token_drop": drop}, losses={"perceptual_loss": "none", "discriminator_weight": 0.0})
    second = TiTok.from_pretrained(stage2)
    # the exported config describes the model only: the recipe's teacher, init_weight and token_drop stay out
    assert list(json.loads((Path(stage2) / "config.json").read_text())["model"]) == ["vq_model"]
    assert not torch.equal(first.state_dict()["decoder.null_token"], second.state_dict()["decoder.null_token"])
    assert second.detokenize(second.tokenize(photo_batch(photo_folder)[:2], num_tokens=2)).shape == (2, 3, 64, 64)


def test_token_drop_resumes_exactly(tmp_path, photo_folder):
    """Stopped at step 3 and resumed: the same per-sample prefix lengths, so the same final model."""
    model = {"vq_model": dict(VQ), "token_drop": {"min_tokens": 1, "full_length_fraction": 0.25},
             "warm_start": {"continuous_steps": 2, "kmeans_steps": 1}}
    losses = {"perceptual_loss": "none", "discriminator_weight": 0.0}
    _, whole = run(tmp_path / "whole", photo_folder, "titok_single_stage", steps=6, model=model, losses=losses,
                   save_every=3)
    parts = tmp_path / "parts" / "titok_single_stage"
    resumed = resume_copy(whole.parent, parts, ("checkpoint-6", "final"), photo_folder)
    assert resumed.state.step == 3 and resumed.train()
    expected, got = load_file(whole / "model.safetensors"), load_file(parts / "final" / "model.safetensors")
    assert "decoder.null_token" in got and all(torch.equal(expected[k], got[k]) for k in expected)


def test_single_stage_freeze_encoder_keeps_every_id(tmp_path, photo_folder):
    """Decoder-only fine-tuning with a perceptual term: the ids of init_weight stay, the pictures change."""
    _, first_run = run(tmp_path / "first", photo_folder, "titok_single_stage", steps=6,
                       model={"vq_model": dict(VQ, decoder_head="conv"), "token_drop": {"min_tokens": 1}},
                       losses={"perceptual_loss": "none", "discriminator_weight": 0.0})
    _, second_run = run(tmp_path / "second", photo_folder, "titok_single_stage", steps=6,
                        model={"vq_model": dict(VQ, decoder_head="conv"), "token_drop": {"min_tokens": 1},
                               "init_weight": str(first_run), "freeze_encoder": True},
                        losses={"perceptual_loss": "mobilenet_v2", "perceptual_weight": 0.1, "discriminator_weight": 0.0})
    first, second = TiTok.from_pretrained(first_run), TiTok.from_pretrained(second_run)
    images = photo_batch(photo_folder)
    assert torch.equal(first.tokenize(images), second.tokenize(images))
    ids = first.tokenize(images, num_tokens=3)
    assert not torch.allclose(first.detokenize(ids), second.detokenize(ids))
    assert list(json.loads((Path(second_run) / "config.json").read_text())["model"]) == ["vq_model"]


def test_freeze_encoder_needs_the_weights_to_keep(tmp_path, photo_folder):
    with pytest.raises(TrainingError, match="freeze_encoder needs model.init_weight"):
        run(tmp_path, photo_folder, "titok_single_stage", model={"vq_model": dict(VQ), "freeze_encoder": True},
            losses={"perceptual_loss": "none", "discriminator_weight": 0.0})

"""`onetok card`: evaluate a trained model on held-out photos and write it with its card to --dest.

    onetok card tokenizer outputs/default_tokenizer --val VAL.npy --dest DEST
    onetok card generator outputs/default_generator --val VAL.npy \
        --train TRAIN.npy --tokenizer TOKENIZER --dest DEST

(`make default-model` passes src/onetok/assets/default_* as DEST: the card never picks a place itself.)

The tokenizer is compared with the no-model baseline of the same byte budget (a tiny
thumbnail upsampled bicubically) on PSNR, SSIM and FID/KID (FID Inception, offline copy).
The generator's samples are scored with FID/KID against the held-out photos, beside two
reference rows: real training photos (the floor at this sample size) and the tokenizer's
reconstructions of them (the best a generator over these tokens can do).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.images import make_grid, save_image
from ..files import atomic_write_bytes
from ..data.sources import array_sidecars
from ..evaluation.baselines import thumbnail_baseline
from ..evaluation.fid import KIDProtocol, fid_from_features
from ..evaluation.image_metrics import psnr, quantize_8bit, ssim
from ..evaluation.inception import load_fid_inception
from ..evaluation.rate_quality import evaluate_rate_quality
from ..models import MaskGIT, TiTok
from ..pipeline import Pipeline, in_batches
from ..training.perceptual import perceptual_in_use


def load_array(path: str, limit: int | None = None) -> torch.Tensor:
    array = np.array(np.load(Path(path).expanduser(), mmap_mode="r")[:limit])  # a writable copy of the rows used
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)


def load_labels(path: str, limit: int | None = None) -> np.ndarray:
    """The labels saved beside a predecoded array (the layout `ArrayDataset` reads)."""
    return np.load(array_sidecars(Path(path).expanduser())[0])[:limit]


def exact_pipeline(tokenizer: TiTok, generator: MaskGIT | None = None) -> Pipeline:
    """Cards report float32 numbers on the CPU, whatever the machine's "auto" precision."""
    return Pipeline(tokenizer, generator, device="cpu", precision="fp32")


def on_cpu(model_fn, inputs: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    with torch.inference_mode():
        return in_batches(model_fn, inputs, batch_size)


def inception_features(*image_sets: torch.Tensor) -> list[np.ndarray]:
    inception = load_fid_inception().eval()
    return [on_cpu(inception, x, 32).numpy() for x in image_sets]


def distances(real: np.ndarray, fake: np.ndarray) -> dict:
    kid = KIDProtocol(subset_size=50).score(real, fake)
    return {"fid": fid_from_features(real, fake), "kid": kid.mean, "kid_std": kid.std}


@torch.no_grad()
def compare_with_thumbnail(model: TiTok, images: torch.Tensor, batch_size: int = 16, num_tokens: int | None = None,
                           real: np.ndarray | None = None) -> dict:
    """The model from its first `num_tokens` tokens (default all) against the thumbnail of the same bytes."""
    pipeline = exact_pipeline(model)
    k = num_tokens or model.config.num_latent_tokens
    recon = quantize_8bit(pipeline.reconstruct(images, batch_size, num_tokens=k))
    budget = k * model.config.bits_per_token / 8
    thumbs, side = thumbnail_baseline(images, budget)
    real = inception_features(images)[0] if real is None else real
    fakes = inception_features(recon, thumbs)
    rows = {name: {"psnr": psnr(images, x).mean().item(), "ssim": ssim(images, x).mean().item(), **distances(real, f)}
            for (name, x), f in zip((("model", recon), ("thumbnail", thumbs)), fakes)}
    return {"num_tokens": k, "bytes_per_image": budget, "thumbnail_side": side, "num_images": len(images),
            "metrics": rows, "grid": make_grid(torch.cat([images[:8], recon[:8], thumbs[:8]]), ncol=8)}


def rate_quality(model: TiTok, images: torch.Tensor) -> list[dict]:
    """compare_with_thumbnail at K/8, K/4, K/2 and K tokens (a variable-length model)."""
    real = inception_features(images)[0]
    counts = sorted({max(1, model.config.num_latent_tokens // d) for d in (8, 4, 2, 1)})
    return [compare_with_thumbnail(model, images, num_tokens=k, real=real) for k in counts]


def rate_quality_card(model: TiTok, images: torch.Tensor, dest: Path) -> tuple[list[dict], list[str]]:
    """The rate-quality rows, their card section, and (written to `dest`) the PSNR plot and prefix pictures."""
    rows = rate_quality(model, images)
    lines = ["## Any prefix of the tokens", "",
             "Trained with tail-token drop (`model.token_drop`): the first k tokens decode on their own, the rest "
             "are the learned null token. Each k against the thumbnail of the same bytes, same held-out photos:", "",
             "| tokens | bytes | PSNR model | PSNR thumbnail | SSIM model | SSIM thumbnail | KID x1000 model | "
             "KID x1000 thumbnail |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, t = r["metrics"]["model"], r["metrics"]["thumbnail"]
        lines.append(f"| {r['num_tokens']} | {r['bytes_per_image']:g} | {m['psnr']:.2f} | {t['psnr']:.2f} ({r['thumbnail_side']}x"
                     f"{r['thumbnail_side']}) | {m['ssim']:.3f} | {t['ssim']:.3f} | {1000 * m['kid']:.1f} | {1000 * t['kid']:.1f} |")
    dest.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([r["grid"] for r in rows], dim=1), dest / "prefix_reconstructions.png")
    # every k from 1 to K against the image codecs: the library's rate-quality evaluation, written beside the card
    evaluate_rate_quality(model, images, out_dir=dest, kid=KIDProtocol(subset_size=50), progress=False)
    lines += ["", "`prefix_reconstructions.png`: for each k (blocks top to bottom) originals, reconstructions from "
              "k tokens, thumbnails.", "",
              *("\n" + (dest / "rate_quality.md").read_text()).replace("\n# ", "\n## ").splitlines()[1:], "",
              "`rate_quality.png`: PSNR and KID against bytes per image, every k beside JPEG, WebP, AVIF, ThumbHash "
              "and thumbnails (`onetok eval recon --num-tokens 1,2,4,...,K`; table and data in rate_quality.md/.json)."]
    return rows, lines


def training_summary(run_dir: Path) -> dict:
    """Steps and wall time from the run's CSV log."""
    log = run_dir / "logs" / "metrics.csv"
    if not log.is_file():
        return {}
    rows = list(csv.DictReader(log.open()))
    if not rows:
        return {}
    out = {"steps": rows[-1].get("step")}
    started, final = run_dir / "config.yaml", run_dir / "final"
    if started.exists() and final.exists():  # the run writes config.yaml first and final/ last
        out["wall_minutes"] = round((final.stat().st_mtime - started.stat().st_mtime) / 60, 1)
    return out


def run_training(run: Path) -> dict:
    """`training_summary`, or for a shipped model whose run folder is gone, the card in its `final/`."""
    card = run / "final" / "metrics.json"
    return training_summary(run) or (json.loads(card.read_text()).get("training", {}) if card.is_file() else {})


def _run_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}


def recipe_steps(run: Path) -> list[dict]:
    """The runs that made `run`'s model, first to last, following `model.init_weight`: name, steps,
    wall minutes, warm start, decoder only, perceptual loss. A run folder that is gone counts by the
    card shipped in its `final/`."""
    steps, seen = [], set()
    while run is not None and run.resolve() not in seen:
        seen.add(run.resolve())
        config, train = _run_config(run), run_training(run)
        if "recipe" in train:  # a shipped model whose run folders are gone: its card lists the runs that made it
            return train["recipe"] + steps
        losses = config.get("losses", {})
        kind = losses.get("perceptual_loss", "auto")
        perceptual = kind if config and perceptual_in_use(kind, losses.get("perceptual_weight", 0.1)) else "none"
        steps.insert(0, {"name": run.name, **train, "warm_start": config.get("model", {}).get("warm_start") is not None
                         or not config,  # a shipped step's recipe is its own card's
                         "decoder_only": bool(config.get("model", {}).get("freeze_encoder")),
                         "perceptual_loss": perceptual})
        init = config.get("model", {}).get("init_weight")
        run = Path(init).expanduser().parent if init else None
    return steps


def step_notes(step: dict) -> tuple[str, ...]:
    """What a recipe step does beyond MSE on the whole model, for the card's recipe line."""
    notes = ("the decoder alone (encoder and codebook frozen: the same ids)",) if step.get("decoder_only") else ()
    if step.get("perceptual_loss", "none") != "none":
        notes += (f"a small `{step['perceptual_loss']}` feature loss",)
    return notes


def recipe_notes(chain: list[dict]) -> str:
    """'; `a`, `b`: notes' for each run of consecutive steps with the same notes."""
    parts = []
    for notes, steps in itertools.groupby(chain, key=step_notes):
        if notes:
            names = ", ".join("`" + step["name"] + "`" for step in steps)
            parts.append(f"; {names}: " + ", plus ".join(notes))
    return "".join(parts)


def ship(model, dest: Path, picture: str, result: dict, train: dict, card: list[str]) -> None:
    """Replace `dest` with the model in float16 (half the bytes; loads back as float32), its picture,
    metrics.json and the card README.md; print the card."""
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(dest, dtype=torch.float16)
    save_image(result["grid"], dest / picture)
    metrics = {k: v for k, v in result.items() if k != "grid"} | {"training": train}
    atomic_write_bytes(dest / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    atomic_write_bytes(dest / "README.md", ("\n".join(card) + "\n").encode())
    print("\n".join(card))


def tokenizer_card(args) -> int:
    run = Path(args.run)
    model = TiTok.from_pretrained(run / "final")
    result = compare_with_thumbnail(model, load_array(args.val, args.limit))
    m, t = result["metrics"]["model"], result["metrics"]["thumbnail"]
    cfg, train = model.config, training_summary(run)
    run_config = _run_config(run)
    scale = run_config.get("dataset", {}).get("preprocessing", {}).get("random_resized_crop_scale")
    crops = f"random resized crops (scale {scale[0]:g}-{scale[1]:g})" if scale else "random crops"
    chain = recipe_steps(run)
    warm = any(step["warm_start"] for step in chain)
    if len(chain) > 1:
        train["recipe"] = chain
    steps = " + ".join(f"{step.get('steps', '?')} (`{step['name']}`, {step.get('wall_minutes', '?')} min)"
                       for step in chain)
    lines = [
        "# onetok default tokenizer", "",
        f"A single-stage TiTok ({cfg.decoder_head} pixel head): {cfg.crop_size} px images -> {cfg.num_latent_tokens} tokens "
        f"from a {cfg.codebook_size} x {cfg.token_size} l2-normalised codebook = {result['bytes_per_image']:g} bytes "
        f"per image; encoder and decoder `{cfg.vit_enc_model_size}` ViTs, {model.num_parameters() / 1e6:.1f}M parameters "
        "(stored in float16, loaded as float32).", "",
        "- data: the offline photo pool of `onetok datasets fetch debian-photos` (Debian package photos; "
        f"licences in its manifest), train split, {crops} + flips",
        "- recipe: MSE, with the warm start of `onetok.training.warm_start` (continuous latents first, "
        "then a codebook seeded by k-means on them)" + ("; tail-token drop, so any prefix of the tokens decodes"
                                                         if cfg.variable_length else "")
        + recipe_notes(chain)
        if warm else "- recipe: see the config",
        "- configs: " + ", then ".join(f"`configs/{step['name']}.yaml`" for step in chain)
        + f" (each from the previous one's weights); command: `{args.command}`",
        f"- steps: {steps} on a 2-core CPU",
        f"- held-out evaluation: {result['num_images']} val photos never trained on, resized and center-cropped, "
        "reconstructions quantised to 8 bits; FID/KID on the FID Inception (offline copy). "
        "FID on so few images is biased high: compare rows, not with the paper.", "",
        f"| method ({result['bytes_per_image']:g} bytes/image) | PSNR (dB) | SSIM | FID | KID x1000 |", "|---|---|---|---|---|",
        f"| onetok default tokenizer | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['fid']:.1f} | {1000 * m['kid']:.1f} |",
        f"| {result['thumbnail_side']}x{result['thumbnail_side']} thumbnail, bicubic | {t['psnr']:.2f} | {t['ssim']:.3f} | "
        f"{t['fid']:.1f} | {1000 * t['kid']:.1f} |", "",
        f"Model minus thumbnail: PSNR {m['psnr'] - t['psnr']:+.2f} dB, SSIM {m['ssim'] - t['ssim']:+.3f}, "
        f"FID {m['fid'] - t['fid']:+.1f}, KID x1000 {1000 * (m['kid'] - t['kid']):+.1f}.", "",
        "`heldout_reconstructions.png`: originals, reconstructions, thumbnails (rows).",
    ]
    if cfg.variable_length:
        with tempfile.TemporaryDirectory() as pictures:
            result["rate_quality"], section = rate_quality_card(model, load_array(args.val), Path(pictures))
            for row in result["rate_quality"]:
                row.pop("grid")
            ship(model, Path(args.dest), "heldout_reconstructions.png", result, train, lines + [""] + section)
            for picture in Path(pictures).iterdir():
                shutil.copy(picture, Path(args.dest) / picture.name)
        return 0
    ship(model, Path(args.dest), "heldout_reconstructions.png", result, train, lines)
    return 0


@torch.no_grad()
def score_generator(generator: MaskGIT, tokenizer: TiTok, val: torch.Tensor, val_labels: np.ndarray,
                    train: torch.Tensor, per_class: int, seed: int = 0) -> dict:
    """FID/KID of samples (per_class for every class of the held-out photos) against those photos."""
    pipeline = exact_pipeline(tokenizer, generator)
    classes = torch.from_numpy(np.unique(val_labels)).long().repeat_interleave(per_class)
    started = time.perf_counter()
    samples = quantize_8bit(pipeline.generate(classes.tolist(), seed=seed, batch_size=64))
    rate = len(classes) / (time.perf_counter() - started)
    # reference rows of the same size: real training photos, and the tokenizer's reconstructions of them
    picked = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: len(classes)]]
    recon = quantize_8bit(pipeline.reconstruct(picked, 64))
    real, *fakes = inception_features(val, samples, picked, recon)
    rows = {name: distances(real, f) for name, f in zip(("samples", "train photos", "train reconstructions"), fakes)}
    order = torch.argsort(classes, stable=True)
    return {"num_samples": len(classes), "num_classes": len(np.unique(val_labels)), "num_heldout": len(val),
            "samples_per_second": rate, "metrics": rows, "grid": make_grid(samples[order][: 8 * per_class], ncol=per_class)}


def generator_card(args) -> int:
    run = Path(args.run)
    generator, tokenizer = MaskGIT.from_pretrained(run / "final"), TiTok.from_pretrained(args.tokenizer)
    result = score_generator(generator, tokenizer, load_array(args.val, args.limit), load_labels(args.val, args.limit),
                             load_array(args.train), args.per_class)
    train = run_training(run)
    cfg, rows = generator.config, result["metrics"]
    names = cfg.extra.get("dataset", {}).get("class_names") or []
    lines = [
        "# onetok default generator", "",
        f"A class-conditional MaskGIT ({cfg.model_type}, width {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"{generator.num_parameters() / 1e6:.1f}M parameters, stored in float16) over the default tokenizer's "
        f"{cfg.image_seq_len} tokens; {cfg.num_steps} sampling steps, guidance {cfg.guidance_scale:g} ({cfg.guidance_decay}).", "",
        f"- data: the default tokenizer's tokens of the offline photo pool's train split (and their flips); "
        f"{cfg.condition_num_classes} classes (its folders): {', '.join(names)}",
        f"- config: `configs/default_generator.yaml`; command: `{args.command}`",
        f"- steps: {train.get('steps', '?')}; wall time: {train.get('wall_minutes', '?')} min on a 2-core CPU",
        f"- evaluation: {result['num_samples']} samples ({args.per_class} for each of the {result['num_classes']} classes "
        f"of the {result['num_heldout']} held-out photos) against those photos, FID/KID on the FID Inception "
        f"(offline copy); sampling ran at {result['samples_per_second']:.1f} samples/s. With so few held-out photos "
        "FID is biased high: read it against the reference rows.", "",
        "| images vs held-out photos | FID | KID x1000 |", "|---|---|---|",
        *(f"| {name} | {r['fid']:.1f} | {1000 * r['kid']:.1f} ± {1000 * r['kid_std']:.1f} |" for name, r in rows.items()),
        "", "`samples.png`: one row per class (the first 8 classes).",
    ]
    ship(generator, Path(args.dest), "samples.png", result, train, lines)
    return 0


def add_parser(subparsers) -> None:
    card = subparsers.add_parser("card", help="evaluate a trained model, write it with its model card to --dest",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = card.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, func in (("tokenizer", tokenizer_card), ("generator", generator_card)):
        p = kinds.add_parser(kind, help=f"the card of a trained {kind}")
        p.add_argument("run", help="the training run's output_dir")
        p.add_argument("--val", required=True, help="held-out photos as a uint8 (N, H, W, 3) .npy (labels beside it)")
        p.add_argument("--dest", required=True, help="the folder to write the model, its card and pictures to")
        if kind == "generator":
            p.add_argument("--train", required=True, help="training photos .npy, for the reference rows")
            p.add_argument("--tokenizer", required=True, help="the tokenizer its tokens came from")
            p.add_argument("--per-class", type=int, default=10, help="samples per held-out class")
        p.add_argument("--limit", type=int, help="use only the first N held-out photos (quick runs; numbers are rough)")
        p.add_argument("--command", default="make default-model", help="the command the card says made the model")
        p.set_defaults(func=func)


if __name__ == "__main__":  # python -m onetok.cli.model_card ... == onetok card ...
    from onetok.cli.main import main

    sys.exit(main(["card", *sys.argv[1:]]))

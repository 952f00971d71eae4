"""`make demo`: reconstruct real photos with the shipped tokenizer (and sample from the generator).

Writes outputs/demo/: a side-by-side PNG, the token ids, and report.md with the
tokens and bytes per image, PSNR/SSIM, and the no-model baseline of the same byte
budget (a tiny thumbnail upsampled bicubically).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from ..data.images import load_image, make_grid, pil_to_tensor, resize_center_crop, save_image
from ..evaluation.baselines import thumbnail_baseline
from ..evaluation.image_metrics import psnr, ssim
from ..hub import CheckpointError, default_generator_path, default_tokenizer_path
from ..models import MaskGIT, TiTok
from ..precision import autocast, resolve_precision


def sample_photos(size: int) -> tuple[list[str], torch.Tensor]:
    """The scikit-image and scikit-learn sample photos (the `demo` extra)."""
    try:
        from skimage import data
        from sklearn.datasets import load_sample_images
    except ImportError:
        sys.exit("make demo needs the demo extra: pip install 'onetok[demo]' (or pass IMAGES=...)")
    named = {n: getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")}
    named |= {f"sklearn_{i}": img for i, img in enumerate(load_sample_images().images)}
    tensors = [pil_to_tensor(resize_center_crop(Image.fromarray(a).convert("RGB"), size)) for a in named.values()]
    return list(named), torch.stack(tensors)


def load_models() -> tuple[TiTok, MaskGIT | None, bool]:
    """The shipped default models, or random tiny ones (said plainly) when none are shipped."""
    try:
        tokenizer = TiTok.from_pretrained(default_tokenizer_path())
    except CheckpointError:
        torch.manual_seed(0)
        print("NOTE: no trained default model is shipped in this build: using RANDOMLY INITIALISED tiny "
              "models, so the pictures show the pipeline, not quality.")
        return TiTok.from_config("titok_tiny").eval(), MaskGIT.from_config("generator_titok_tiny").eval(), True
    try:
        generator = MaskGIT.from_pretrained(default_generator_path())
    except CheckpointError:
        generator = None
    return tokenizer, generator, False


def budget_pictures(tokenizer: TiTok, images: torch.Tensor, out: Path) -> list[str]:
    """budget_strip.png (each photo from its first 1, 2, 4, ... K tokens) and the rate-quality
    table and plot of these photos beside JPEG, WebP, AVIF, ThumbHash and thumbnails."""
    from ..evaluation.rate_quality import budget_strip, evaluate_rate_quality, strip_picture

    strips = [strip_picture(image, budget_strip(tokenizer, image), scale=2) for image in images]
    sheet = Image.new("RGB", (strips[0].width, sum(s.height for s in strips)), "white")
    for row, strip in enumerate(strips):
        sheet.paste(strip, (0, row * strips[0].height))
    save_image(sheet, out / "budget_strip.png")
    evaluate_rate_quality(tokenizer, images, out_dir=out, kid_subsets=10, kid_subset_size=len(images))
    return ["", "`budget_strip.png`: each photo from its first 1, 2, 4, ... tokens of the one model, with bytes "
            "and PSNR under each; `rate_quality.md` / `rate_quality.png`: the same budgets beside JPEG, WebP, "
            "AVIF, ThumbHash and same-byte thumbnails on these photos.", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", nargs="*", help="image files (default: the scikit-image/learn samples)")
    parser.add_argument("-o", "--output", default="outputs/demo")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer, generator, random_weights = load_models()
    cfg = tokenizer.config
    if args.images:
        names, images = [Path(p).stem for p in args.images], torch.stack([load_image(p, cfg.crop_size) for p in args.images])
    else:
        names, images = sample_photos(cfg.crop_size)

    precision = resolve_precision(args.precision)
    started = time.perf_counter()
    with autocast(precision):
        ids = tokenizer.tokenize(images)
        recon = tokenizer.detokenize(ids)
    seconds = time.perf_counter() - started
    bytes_per_image = cfg.num_latent_tokens * math.log2(cfg.codebook_size) / 8
    thumbs, side = thumbnail_baseline(images, bytes_per_image)

    save_image(make_grid(torch.cat([images, recon, thumbs]), ncol=len(images)), out / "reconstruction.png")
    (out / "tokens.json").write_text(json.dumps({n: row.tolist() for n, row in zip(names, ids)}, indent=1))
    model_psnr, thumb_psnr = psnr(images, recon), psnr(images, thumbs)
    model_ssim, thumb_ssim = ssim(images, recon), ssim(images, thumbs)

    lines = [
        "# onetok demo", "",
        "**Weights are random: this shows the pipeline, not quality.**" if random_weights else
        f"Default tokenizer: {cfg.num_latent_tokens} tokens, {cfg.crop_size} px.", "",
        f"- tokens per image: {cfg.num_latent_tokens} (codebook {cfg.codebook_size}) = {bytes_per_image:g} bytes",
        f"- baseline of the same budget: a {side}x{side} RGB thumbnail ({3 * side * side} bytes) upsampled bicubically",
        f"- tokenize + detokenize of {len(images)} images: {seconds:.2f} s ({precision})", "",
        "| image | PSNR model | PSNR thumbnail | SSIM model | SSIM thumbnail |", "|---|---|---|---|---|",
    ]
    for row in zip(names, model_psnr, thumb_psnr, model_ssim, thumb_ssim):
        lines.append(f"| {row[0]} | " + " | ".join(f"{v:.3f}" for v in row[1:]) + " |")
    lines += [f"| **mean** | {model_psnr.mean():.3f} | {thumb_psnr.mean():.3f} | {model_ssim.mean():.3f} | {thumb_ssim.mean():.3f} |",
              "", "Rows of `reconstruction.png`: originals, reconstructions, thumbnail baseline.", ""]

    lines += budget_pictures(tokenizer, images, out)

    if generator is not None:
        gcfg = generator.config
        classes = torch.arange(min(gcfg.condition_num_classes, 8)).repeat_interleave(4)
        torch.manual_seed(0)
        started = time.perf_counter()
        with autocast(precision):
            samples = tokenizer.detokenize(generator.generate(
                classes, guidance_scale=gcfg.guidance_scale, guidance_decay=gcfg.guidance_decay,
                randomize_temperature=gcfg.randomize_temperature, num_sample_steps=gcfg.num_steps))
        rate = len(classes) / (time.perf_counter() - started)
        save_image(make_grid(samples, ncol=4), out / "generated.png")
        names_map = gcfg.extra.get("dataset", {}).get("class_names")
        lines += [f"Generated {len(classes)} images (4 per class, one class per row) at {rate:.2f} samples/s "
                  f"({gcfg.num_steps} steps): `generated.png`."]
        if names_map:
            lines += ["Classes: " + ", ".join(names_map[: len(classes) // 4])]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out}/reconstruction.png, tokens.json, budget_strip.png, rate_quality.md/.png, "
          f"{'generated.png, ' if generator else ''}report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

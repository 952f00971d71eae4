"""`onetok demo` (`make demo`): reconstruct photos with the shipped tokenizer and sample the generator.

Writes to -o (default outputs/demo): a side-by-side PNG, the token ids, samples and report.md
with the tokens and bytes per image, PSNR/SSIM, and the no-model baseline of the same byte
budget (a tiny thumbnail upsampled bicubically). Without --images: the example photos shipped
with onetok. The samples are `Pipeline.generate(classes, seed=0)`, so the same as
`onetok sample --classes 0,..,7 --per-class 4 --seed 0` draws.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from ..data.images import make_grid, save_image
from ..evaluation.baselines import thumbnail_baseline
from ..evaluation.image_metrics import psnr, ssim
from ..files import atomic_write_bytes
from ..hub import CheckpointError, example_photos
from ..models import MaskGIT, TiTok
from ..pipeline import Pipeline
from ..precision import PRECISIONS
from .core import PRECISION_HELP, check_writable

SAMPLE_CLASSES, SAMPLES_PER_CLASS = 8, 4


def demo_pipeline(device: str | None, precision: str) -> tuple[Pipeline, bool]:
    """The shipped models, or random tiny ones (said plainly) when none are shipped."""
    try:
        return Pipeline.from_pretrained(device=device, precision=precision), False
    except CheckpointError:
        torch.manual_seed(0)
        print("NOTE: no trained default model is shipped in this build: using RANDOMLY INITIALISED tiny "
              "models, so the pictures show the pipeline, not quality.")
        pipeline = Pipeline(TiTok.from_config("titok_tiny"), MaskGIT.from_config("generator_titok_tiny"), device,
                            precision)
        return pipeline, True


def budget_pictures(tokenizer: TiTok, images: torch.Tensor, out: Path) -> list[str]:
    """budget_strip.png (each photo from its first 1, 2, 4, ... K tokens) and the rate-quality
    table and plot of these photos beside JPEG, WebP, AVIF, ThumbHash and thumbnails."""
    from ..evaluation.fid import KIDProtocol
    from ..evaluation.rate_quality import budget_strip, evaluate_rate_quality, strip_picture

    strips = [strip_picture(image, budget_strip(tokenizer, image), scale=2) for image in images]
    sheet = Image.new("RGB", (strips[0].width, sum(s.height for s in strips)), "white")
    for row, strip in enumerate(strips):
        sheet.paste(strip, (0, row * strips[0].height))
    save_image(sheet, out / "budget_strip.png")
    evaluate_rate_quality(tokenizer, images, out_dir=out, kid=KIDProtocol(subsets=10, subset_size=len(images)))
    return ["", "`budget_strip.png`: each photo from its first 1, 2, 4, ... tokens of the one model, with bytes "
            "and PSNR under each; `rate_quality.md` / `rate_quality.png`: the same budgets beside JPEG, WebP, "
            "AVIF, ThumbHash and same-byte thumbnails on these photos.", ""]


def write_demo(out: Path, images: list[str | Path], device: str | None = None,
               precision: str = "auto") -> tuple[list[str], list[Path]]:
    """Run the demo on `images` into the folder `out`; returns (the report's lines, the files written)."""
    pipe, random_weights = demo_pipeline(device, precision)
    names, originals = [Path(p).stem for p in images], pipe.load_images(images)
    started = time.perf_counter()
    ids = pipe.tokenize(originals)
    recon = pipe.detokenize(ids)
    seconds = time.perf_counter() - started
    budget = pipe.bits_per_image / 8
    thumbs, side = thumbnail_baseline(originals, budget)

    save_image(make_grid(torch.cat([originals, recon, thumbs]), ncol=len(originals)), out / "reconstruction.png")
    tokens = {n: row.tolist() for n, row in zip(names, ids)}
    atomic_write_bytes(out / "tokens.json", (json.dumps(tokens, indent=1) + "\n").encode())
    model_psnr, thumb_psnr = psnr(originals, recon), psnr(originals, thumbs)
    model_ssim, thumb_ssim = ssim(originals, recon), ssim(originals, thumbs)
    lines = [
        "# onetok demo", "",
        "**Weights are random: this shows the pipeline, not quality.**" if random_weights else
        f"Default tokenizer: {pipe.num_tokens} tokens, {pipe.image_size} px.", "",
        f"- tokens per image: {pipe.num_tokens} (codebook {pipe.codebook_size}) = {budget:g} bytes",
        f"- baseline of the same budget: a {side}x{side} RGB thumbnail ({3 * side * side} bytes) upsampled bicubically",
        f"- tokenize + detokenize of {len(originals)} images: {seconds:.2f} s ({pipe.precision})", "",
        "| image | PSNR model | PSNR thumbnail | SSIM model | SSIM thumbnail |", "|---|---|---|---|---|",
    ]
    for row in zip(names, model_psnr, thumb_psnr, model_ssim, thumb_ssim):
        lines.append(f"| {row[0]} | " + " | ".join(f"{v:.3f}" for v in row[1:]) + " |")
    lines += [f"| **mean** | {model_psnr.mean():.3f} | {thumb_psnr.mean():.3f} | {model_ssim.mean():.3f} | "
              f"{thumb_ssim.mean():.3f} |", "", "Rows of `reconstruction.png`: originals, reconstructions, thumbnail baseline.", ""]

    lines += budget_pictures(pipe.tokenizer, originals, out)

    if pipe.generator is not None:
        shown = list(range(min(pipe.num_classes, SAMPLE_CLASSES)))
        classes = [c for c in shown for _ in range(SAMPLES_PER_CLASS)]
        started = time.perf_counter()
        samples = pipe.generate(classes, seed=0)
        rate = len(classes) / (time.perf_counter() - started)
        save_image(make_grid(samples, ncol=SAMPLES_PER_CLASS), out / "generated.png")
        lines += [f"Generated {len(classes)} images ({SAMPLES_PER_CLASS} per class, one class per row, seed 0) at "
                  f"{rate:.2f} samples/s ({pipe.sampling['num_sample_steps']} steps): `generated.png`.",
                  "Classes: " + ", ".join(pipe.class_names[c] for c in shown)]
    atomic_write_bytes(out / "report.md", ("\n".join(lines) + "\n").encode())
    names = ["reconstruction.png", "tokens.json", "budget_strip.png", "rate_quality.md", "rate_quality.json", "rate_quality.png",
             *(["generated.png"] if pipe.generator is not None else []), "report.md"]
    return lines, [out / name for name in names]


def cmd_demo(args) -> int:
    out = check_writable(Path(args.output))
    images = args.images or example_photos()
    lines, written = write_demo(out, images, args.device, args.precision)
    print("\n".join(lines))
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="reconstructions beside a same-budget thumbnail, and samples: a report",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--images", nargs="+", help="image files (default: the example photos shipped with onetok)")
    p.add_argument("-o", "--output", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--device", help="default: cuda when there is one")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(func=cmd_demo)


if __name__ == "__main__":  # python -m onetok.cli.demo ... == onetok demo ...
    from onetok.cli.main import main

    sys.exit(main(["demo", *sys.argv[1:]]))

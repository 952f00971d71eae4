"""Ship a trained default model: evaluate on held-out photos, write its card, copy it to assets.

    python -m onetok.cli.model_card tokenizer outputs/default_tokenizer --val VAL.npy \
        --dest src/onetok/assets/default_tokenizer

The tokenizer is compared with the no-model baseline of the same byte budget (a tiny
thumbnail upsampled bicubically) on PSNR, SSIM and FID/KID (FID Inception, offline copy).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.images import make_grid, save_image
from ..evaluation.baselines import thumbnail_baseline
from ..evaluation.fid import fid_from_features, kernel_inception_distance
from ..evaluation.image_metrics import psnr, quantize_8bit, ssim
from ..evaluation.inception import load_fid_inception
from ..models import TiTok


def load_array(path: str) -> torch.Tensor:
    array = np.load(Path(path).expanduser())
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)


@torch.no_grad()
def compare_with_thumbnail(model: TiTok, images: torch.Tensor, batch_size: int = 16) -> dict:
    recon = torch.cat([model.detokenize(model.tokenize(images[i : i + batch_size]))
                       for i in range(0, len(images), batch_size)])
    recon = quantize_8bit(recon)
    budget = model.config.num_latent_tokens * math.log2(model.config.codebook_size) / 8
    thumbs, side = thumbnail_baseline(images, budget)
    inception = load_fid_inception().eval()
    feats = {name: torch.cat([inception(x[i : i + 32]) for i in range(0, len(x), 32)]).numpy()
             for name, x in (("real", images), ("model", recon), ("thumbnail", thumbs))}
    subset = min(len(images), 50)
    rows = {}
    for name, x in (("model", recon), ("thumbnail", thumbs)):
        kid, kid_std = kernel_inception_distance(feats["real"], feats[name], num_subsets=100, subset_size=subset)
        rows[name] = {"psnr": psnr(images, x).mean().item(), "ssim": ssim(images, x).mean().item(),
                      "fid": fid_from_features(feats["real"], feats[name]), "kid": kid, "kid_std": kid_std}
    return {"bytes_per_image": budget, "thumbnail_side": side, "num_images": len(images), "metrics": rows,
            "grid": make_grid(torch.cat([images[:8], recon[:8], thumbs[:8]]), ncol=8)}


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


def tokenizer_card(args) -> int:
    run = Path(args.run)
    model = TiTok.from_pretrained(run / "final")
    result = compare_with_thumbnail(model, load_array(args.val))
    dest = Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(dest, dtype=torch.float16)  # half the bytes; loads back as float32
    save_image(result.pop("grid"), dest / "heldout_reconstructions.png")
    m, t = result["metrics"]["model"], result["metrics"]["thumbnail"]
    cfg, train = model.config, training_summary(run)
    (dest / "metrics.json").write_text(json.dumps({**result, "training": train}, indent=1))
    lines = [
        "# onetok default tokenizer", "",
        f"A single-stage TiTok (pixel decoder head): {cfg.crop_size} px images -> {cfg.num_latent_tokens} tokens "
        f"from a {cfg.codebook_size} x {cfg.token_size} l2-normalised codebook = {result['bytes_per_image']:g} bytes "
        f"per image; encoder and decoder `{cfg.vit_enc_model_size}` ViTs, {model.num_parameters() / 1e6:.1f}M parameters "
        "(stored in float16, loaded as float32).", "",
        "- data: the offline photo pool of `onetok datasets fetch debian-photos` (Debian package photos; "
        "licences in its manifest), train split, random resized crops (scale 0.35-1) + flips",
        f"- config: `configs/default_tokenizer.yaml`; command: `{args.command}`",
        f"- steps: {train.get('steps', '?')}; wall time: {train.get('wall_minutes', '?')} min on a 2-core CPU",
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
    (dest / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["tokenizer"])
    parser.add_argument("run", help="the training run's output_dir")
    parser.add_argument("--val", required=True, help="held-out photos as a uint8 (N, H, W, 3) .npy")
    parser.add_argument("--dest", required=True)
    parser.add_argument("--command", default="make default-model")
    return tokenizer_card(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

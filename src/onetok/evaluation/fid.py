"""Feature statistics and the distribution metrics built on them: FID, KID, Inception Score."""
from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from onetok.files import atomic_write_bytes
from onetok.errors import StatisticsError


@dataclass
class FeatureStats:
    """Mean and covariance (N-1 normalised) of a set of features, float64."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None

    def save(self, path: str | os.PathLike, spatial: "FeatureStats | None" = None) -> None:
        """An .npz with mu/sigma (and, given the sFID statistics, ADM's mu_s/sigma_s)."""
        buf = io.BytesIO()
        extra = {} if self.count is None else {"count": np.int64(self.count)}
        if spatial is not None:
            extra |= {"mu_s": spatial.mu, "sigma_s": spatial.sigma}
        np.savez(buf, mu=self.mu, sigma=self.sigma, **extra)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor) -> "FeatureStats":
        acc = RunningStats()
        acc.update(features)
        return acc.stats()


class RunningStats:
    """Accumulates sums of features and their outer products in float64, one batch at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def update(self, features: np.ndarray | torch.Tensor) -> None:
        x = _as_float64(features)
        if self.total is None:
            self.total = np.zeros(x.shape[1])
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self.total.shape[0]:
            raise StatisticsError(f"features of dim {x.shape[1]} added to statistics of dim {self.total.shape[0]}")
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def stats(self) -> FeatureStats:
        if self.count < 2:
            raise StatisticsError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return FeatureStats(mu, sigma, self.count)


def _as_float64(features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise StatisticsError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    return x


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)), as pytorch-fid computes it."""
    mu1, mu2 = np.atleast_1d(a.mu).astype(np.float64), np.atleast_1d(b.mu).astype(np.float64)
    s1, s2 = np.atleast_2d(a.sigma).astype(np.float64), np.atleast_2d(b.sigma).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise StatisticsError(f"statistics of different dims: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled below
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            # Near-singular product: shift both covariances by eps * I.
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise StatisticsError(f"sqrtm has a large imaginary part ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def frechet_distance_to_features(ref: FeatureStats, features: np.ndarray | torch.Tensor) -> float:
    """The same distance between statistics and a small feature set, exact and fast.

    With the set's centred features B (n x d), S_b = B^T B / (n - 1), and the nonzero eigenvalues
    of S_ref S_b are those of the n x n symmetric matrix B S_ref B^T / (n - 1): Tr sqrt(S_ref S_b)
    needs an n x n eigendecomposition instead of a d x d matrix square root.
    """
    y = _as_float64(features)
    if y.shape[1] != np.atleast_1d(ref.mu).shape[0]:
        raise StatisticsError(f"features of dim {y.shape[1]} against statistics of dim {np.atleast_1d(ref.mu).shape[0]}")
    if len(y) < 2:
        raise StatisticsError(f"need at least 2 feature vectors, got {len(y)}")
    centred, scale = y - y.mean(axis=0), len(y) - 1
    inner = centred @ ref.sigma @ centred.T / scale
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(inner), 0, None)).sum()
    diff = ref.mu - y.mean(axis=0)
    return float(diff @ diff + np.trace(ref.sigma) + (centred * centred).sum() / scale - 2 * trace_covmean)


def fid_from_features(real: FeatureStats | np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """FID of a feature set against statistics or another feature set. While the smaller set has
    no more samples than feature dims (a singular covariance, where sqrtm is slow and inexact),
    the exact low-rank form is used; otherwise sqrtm, as pytorch-fid."""
    features = _as_float64(fake)
    if isinstance(real, FeatureStats):
        ref = real
    else:
        other = _as_float64(real)
        if len(other) < len(features):  # FID is symmetric: keep the smaller set as features
            other, features = features, other
        ref = FeatureStats.from_features(other)
    if len(features) <= features.shape[1]:
        return frechet_distance_to_features(ref, features)
    return frechet_distance(ref, FeatureStats.from_features(features))


# --------------------------------------------------------------------------- reading statistics


# What numpy and zipfile raise for a truncated or scrambled .npz, at opening or at reading an array.
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def open_npz(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise StatisticsError(f"{path}: no such file")
    try:
        data = np.load(path)
    except _NPZ_ERRORS as err:
        raise StatisticsError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise StatisticsError(f"{path}: a single array, not an .npz archive of named arrays")
    return data


def read_npz_array(data, key: str, path: str | os.PathLike) -> np.ndarray:
    """One array of an open .npz; a damaged member is a StatisticsError naming the file."""
    try:
        return data[key]
    except _NPZ_ERRORS as err:
        raise StatisticsError(f"{path}: array {key!r} is damaged ({type(err).__name__}: {err})") from None


def load_stats(path: str | os.PathLike, feature_fn=None) -> FeatureStats:
    """Statistics from an `.npz`: `mu`/`sigma` (ours, pytorch-fid, the ADM reference batches), or
    `arr_0` uint8 images (ADM batches) when feature_fn maps such images to features."""
    with open_npz(path) as data:
        if "mu" in data and "sigma" in data:
            count = int(read_npz_array(data, "count", path)) if "count" in data else None
            mu, sigma = read_npz_array(data, "mu", path), read_npz_array(data, "sigma", path)
            return FeatureStats(mu.astype(np.float64), sigma.astype(np.float64), count)
    if feature_fn is None:
        raise StatisticsError(f"{path}: has no mu/sigma statistics; computing them needs an Inception network")
    return FeatureStats.from_features(feature_fn(npz_images(path)))


def load_spatial_stats(path: str | os.PathLike) -> FeatureStats | None:
    """The sFID statistics `mu_s`/`sigma_s` of an `.npz` (ADM reference batches, `eval stats`), or None."""
    with open_npz(path) as data:
        if "mu_s" not in data or "sigma_s" not in data:
            return None
        mu, sigma = read_npz_array(data, "mu_s", path), read_npz_array(data, "sigma_s", path)
    return FeatureStats(mu.astype(np.float64), sigma.astype(np.float64))


def npz_images(path: str | os.PathLike) -> np.ndarray:
    """The `arr_0` uint8 (N, H, W, 3) images of an ADM-style sample or reference batch."""
    with open_npz(path) as data:
        if "arr_0" not in data:
            raise StatisticsError(f"{path}: no arr_0 image array (keys {list(data.keys())})")
        images = read_npz_array(data, "arr_0", path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise StatisticsError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


# --------------------------------------------------------------------------- KID and IS


def kid_subset_size(num_real: int, num_fake: int, requested: int) -> int:
    """The subset size KID uses. Subsets as large as the smaller set are that whole set every time,
    which makes the spread over subsets 0 by construction: then half the smaller set is used
    (at least 2, the least the unbiased estimate needs)."""
    smaller = min(num_real, num_fake)
    if requested < smaller:
        return requested
    return max(2, smaller // 2) if smaller >= 4 else smaller


def kernel_inception_distance(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    gamma: float | None = None,
    seed: int = 0,
) -> tuple[float, float | None]:
    """Unbiased MMD^2 with the kernel (gamma x.y + coef0)^degree, averaged over random subsets.

    Returns (mean, std over subsets). The subset size is `kid_subset_size(...)`: shrunk when the
    sets are too small for subsets that differ. std is None when it would not measure a spread
    (one subset, or sets of fewer than 4 where every subset is the whole set).
    """
    x, y = _as_float64(real), _as_float64(fake)
    if x.shape[1] != y.shape[1]:
        raise StatisticsError(f"KID between features of dims {x.shape[1]} and {y.shape[1]}")
    if min(len(x), len(y)) < 2:
        raise StatisticsError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    if num_subsets < 1 or subset_size < 2:
        raise StatisticsError(f"KID needs num_subsets >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}")
    m = kid_subset_size(len(x), len(y), subset_size)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(num_subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        scores.append(polynomial_mmd(xs, ys, degree, gamma, coef0))
    subsets_differ = m < min(len(x), len(y)) and num_subsets > 1
    return float(np.mean(scores)), float(np.std(scores)) if subsets_differ else None


@dataclass(frozen=True)
class KIDScore:
    """KID of one pair of sets, with the report's conventions line and the notes that qualify it."""

    mean: float | None
    std: float | None
    convention: str
    notes: list[str]


@dataclass(frozen=True)
class KIDProtocol:
    """How KID is measured: `subsets` random subsets of `subset_size` per set, the size shrunk by
    `kid_subset_size` when the sets are small. One value carries the choice from the command line
    to every score and report line."""

    subsets: int = 100
    subset_size: int = 1000

    def score(self, real: np.ndarray | None, fake: np.ndarray) -> KIDScore:
        """KID of fake against real; not computed (None) without real features or with fewer than 2 per set."""
        if real is None or min(len(real), len(fake)) < 2:
            return KIDScore(None, None, "not computed", [])
        mean, std = kernel_inception_distance(real, fake, num_subsets=self.subsets, subset_size=self.subset_size)
        used = kid_subset_size(len(real), len(fake), self.subset_size)
        line = f"unbiased MMD^2, cubic polynomial kernel, {self.subsets} random subsets of {used} per set"
        notes = []
        if used != self.subset_size:
            smaller = min(len(real), len(fake))
            if used < smaller:
                notes.append(f"KID subset size shrunk from {self.subset_size} to {used} (half of the {smaller} images): "
                             "subsets as large as the set are the whole set every time, and their spread would be 0 "
                             "by construction.")
            else:
                notes.append(f"kid_std not available: {smaller} images are too few for KID subsets that differ.")
        elif self.subsets < 2:
            notes.append("kid_std not available: one KID subset has no spread.")
        return KIDScore(mean, std, line, notes)


def polynomial_mmd(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD^2 between two equal-size samples (diagonals left out of the within-set terms)."""
    m = len(x)
    k_xx = (gamma * x @ x.T + coef0) ** degree
    k_yy = (gamma * y @ y.T + coef0) ** degree
    k_xy = (gamma * x @ y.T + coef0) ** degree
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


ADM_IS_SPLIT_SIZE = 5000


def inception_score(logits: np.ndarray | torch.Tensor, split_size: int = ADM_IS_SPLIT_SIZE) -> tuple[float, float | None]:
    """exp(E_x KL(p(y|x) || p(y))) per split; returns (mean, std) over splits, std None for one split.

    ADM's convention (guided-diffusion evaluator): consecutive splits of `split_size` samples,
    the last one holding the remainder; 50,000 samples give 10 splits of 5,000."""
    z = torch.as_tensor(_as_float64(logits))
    if split_size < 1:
        raise StatisticsError(f"Inception Score split size must be positive, got {split_size}")
    log_p = torch.log_softmax(z, dim=1)
    scores = []
    for part in torch.split(log_p, split_size):
        log_py = torch.logsumexp(part, dim=0) - np.log(len(part))
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    if not scores:
        raise StatisticsError("Inception Score of an empty set")
    return float(np.mean(scores)), float(np.std(scores)) if len(scores) > 1 else None

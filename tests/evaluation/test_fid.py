"""Frechet distance, running statistics, .npz statistics, KID and Inception Score."""
import math

import numpy as np
import pytest
import torch

from onetok.evaluation import fid


def random_stats(rng, dim, n=None):
    a = rng.normal(size=(n or dim + 5, dim))
    return fid.FeatureStats(rng.normal(size=dim), a.T @ a / len(a))


def reference_frechet(s1, s2):
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix: use eigh only.
    w, v = np.linalg.eigh(s1.sigma)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2.sigma @ root1)
    trace_covmean = np.sqrt(np.clip(inner, 0, None)).sum()
    diff = s1.mu - s2.mu
    return diff @ diff + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * trace_covmean


@pytest.mark.parametrize("dim", [1, 8, 64])
def test_frechet_matches_float64_numpy(dim):
    rng = np.random.default_rng(dim)
    s1, s2 = random_stats(rng, dim), random_stats(rng, dim)
    expected = reference_frechet(s1, s2)
    assert expected > 0
    assert fid.frechet_distance(s1, s2) == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_frechet_of_set_with_itself_is_zero_even_when_singular():
    rng = np.random.default_rng(0)
    stats = fid.FeatureStats.from_features(rng.normal(size=(10, 256)))  # rank 9 covariance
    assert abs(fid.frechet_distance(stats, stats)) < 1e-4
    shifted = fid.FeatureStats(stats.mu + 1.0, stats.sigma)
    assert fid.frechet_distance(stats, shifted) == pytest.approx(256.0, abs=1e-3)


def test_frechet_rejects_mismatched_dims():
    rng = np.random.default_rng(0)
    with pytest.raises(fid.StatisticsError, match="different dims"):
        fid.frechet_distance(random_stats(rng, 4), random_stats(rng, 5))


def test_running_stats_match_numpy_over_batches():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(100, 16)).astype(np.float32) + 3.0
    acc = fid.RunningStats()
    for part in np.array_split(feats, 7):
        acc.update(torch.from_numpy(part))
    stats = acc.stats()
    np.testing.assert_allclose(stats.mu, feats.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)
    assert stats.count == 100
    with pytest.raises(fid.StatisticsError, match="dim"):
        acc.update(np.zeros((2, 3)))


def test_stats_need_two_samples():
    with pytest.raises(fid.StatisticsError, match="at least 2"):
        fid.FeatureStats.from_features(np.zeros((1, 4)))


def test_npz_round_trip_and_adm_layouts(tmp_path):
    rng = np.random.default_rng(2)
    stats = random_stats(rng, 6)
    stats.save(tmp_path / "s.npz")
    back = fid.load_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert fid.load_spatial_stats(tmp_path / "s.npz") is None
    spatial = random_stats(rng, 3)
    stats.save(tmp_path / "with_spatial.npz", spatial=spatial)  # ADM's mu_s/sigma_s beside mu/sigma
    np.testing.assert_array_equal(fid.load_spatial_stats(tmp_path / "with_spatial.npz").sigma, spatial.sigma)

    # ADM reference batch: images plus precomputed mu/sigma -> the precomputed ones are used.
    images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=images, mu=stats.mu, sigma=stats.sigma)
    np.testing.assert_array_equal(fid.load_stats(tmp_path / "ref.npz").mu, stats.mu)

    # Images only -> features through the given function.
    np.savez(tmp_path / "samples.npz", arr_0=images)
    np.testing.assert_array_equal(fid.npz_images(tmp_path / "samples.npz"), images)
    feature_fn = lambda imgs: imgs.reshape(len(imgs), -1)[:, :4].astype(np.float64)
    from_images = fid.load_stats(tmp_path / "samples.npz", feature_fn)
    np.testing.assert_allclose(from_images.mu, feature_fn(images).mean(0))
    with pytest.raises(fid.StatisticsError, match="Inception"):
        fid.load_stats(tmp_path / "samples.npz")


def test_bad_npz_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(fid.StatisticsError, match="not a readable"):
        fid.load_stats(tmp_path / "junk.npz")
    with pytest.raises(fid.StatisticsError, match="no such"):
        fid.load_stats(tmp_path / "absent.npz")
    np.savez(tmp_path / "images.npz", arr_0=np.zeros((50, 8, 8, 3), np.uint8))
    whole = (tmp_path / "images.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])  # end of the zip directory is gone
    with pytest.raises(fid.StatisticsError, match="cut.npz: not a readable .npz"):
        fid.npz_images(tmp_path / "cut.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(fid.StatisticsError, match="single array"):
        fid.load_stats(tmp_path / "single.npz")
    np.savez(tmp_path / "floats.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(fid.StatisticsError, match="uint8"):
        fid.npz_images(tmp_path / "floats.npz")


def test_kid_hand_checked():
    # k(a, b) = (a b + 1)^3; X = {0, 1}, Y = {1, 2}:
    # within X: 2 k(0,1) = 2; within Y: 2 k(1,2) = 54; /(m(m-1)) = 28
    # cross: (k(0,1) + k(0,2) + k(1,1) + k(1,2)) / 4 = (1 + 1 + 8 + 27) / 4 = 9.25 -> 28 - 18.5 = 9.5
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=2)
    assert mean == pytest.approx(9.5) and std is None  # every subset is the whole set: no spread to report


@pytest.mark.parametrize("n,requested,used", [(300, 1000, 150), (300, 300, 150), (300, 299, 299), (5000, 1000, 1000),
                                              (5, 1000, 2), (3, 1000, 3)])
def test_kid_subset_size_leaves_subsets_that_differ(n, requested, used):
    assert fid.kid_subset_size(n, n + 7, requested) == used


def test_kid_on_300_never_reports_a_zero_spread():
    # 300 features per set with the default subset size of 1000: the subsets shrink to 150.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16)) + 0.2
    mean, std = fid.kernel_inception_distance(a, b)
    assert mean > 0 and std is not None and std > 1e-4
    # the mean is still an unbiased MMD^2: near the value of whole-set subsets
    whole, _ = fid.kernel_inception_distance(a, b, num_subsets=1, subset_size=299)
    assert mean == pytest.approx(whole, rel=0.2)
    assert fid.kernel_inception_distance(a, b, num_subsets=1, subset_size=100)[1] is None  # one subset, no spread


def test_kid_protocol_scores_with_its_report_line_and_notes():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16)) + 0.2
    score = fid.KIDProtocol(subsets=10).score(a, b)
    assert (score.mean, score.std) == fid.kernel_inception_distance(a, b, num_subsets=10, subset_size=1000)
    assert score.convention.endswith("10 random subsets of 150 per set")
    assert len(score.notes) == 1 and "shrunk from 1000 to 150" in score.notes[0]
    assert fid.KIDProtocol(subsets=1, subset_size=100).score(a, b).notes == [
        "kid_std not available: one KID subset has no spread."]
    assert fid.KIDProtocol().score(None, b) == fid.KIDScore(None, None, "not computed", [])


def test_kid_small_for_same_distribution_and_large_for_shifted():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    same, _ = fid.kernel_inception_distance(a, b, num_subsets=10, subset_size=100)
    shifted, _ = fid.kernel_inception_distance(a, b + 1.0, num_subsets=10, subset_size=100)
    assert abs(same) < 0.02 and shifted > 0.5


def test_inception_score_hand_checked():
    p, q = [0.8, 0.2], [0.2, 0.8]
    # p(y) = (0.5, 0.5); KL = 0.8 ln 1.6 + 0.2 ln 0.4 for both samples
    kl = 0.8 * math.log(1.6) + 0.2 * math.log(0.4)
    mean, std = fid.inception_score(np.log([p, q]))
    assert mean == pytest.approx(math.exp(kl)) and std is None  # one split: no spread
    # Splits of 2: (p, q) scores exp(kl), (p, p) scores 1.
    mean, std = fid.inception_score(np.log([p, q, p, p]), split_size=2)
    assert mean == pytest.approx((math.exp(kl) + 1) / 2) and std == pytest.approx((math.exp(kl) - 1) / 2)
    # One-hot-like predictions over 4 equally used classes -> IS close to 4.
    mean, _ = fid.inception_score(torch.eye(4) * 50)
    assert mean == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(fid.StatisticsError, match="split size"):
        fid.inception_score(np.zeros((3, 5)), split_size=0)


def adm_inception_score(probs, split_size=5000):
    """guided-diffusion's evaluator, written out: consecutive chunks, the last one partial."""
    scores = []
    for i in range(0, len(probs), split_size):
        part = probs[i : i + split_size]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), len(scores)


def test_inception_score_uses_adm_splits_of_5000():
    # 12,000 samples -> splits of 5000, 5000 and 2000 (not 10 equal splits). A stand-in logits head:
    # a fixed random projection of random "features" to 1008 classes.
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(12_000, 64)) @ rng.normal(size=(64, 1008)) * 0.3
    logits[:5000] *= 3  # the first split is more confident: splits score differently
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected, num_splits = adm_inception_score(probs)
    assert num_splits == 3
    mean, std = fid.inception_score(logits)
    assert mean == pytest.approx(expected, rel=1e-9) and std > 0
    ten_equal = np.mean([adm_inception_score(part, len(part))[0] for part in np.array_split(probs, 10)])
    assert abs(mean - ten_equal) > 1e-3  # the convention matters


@pytest.mark.parametrize("n_real,n_fake", [(5, 9), (12, 12), (200, 7), (8, 300)])
def test_low_rank_fid_matches_sqrtm(n_real, n_fake):
    rng = np.random.default_rng(n_real)
    real, fake = rng.normal(size=(n_real, 40)), rng.normal(size=(n_fake, 40)) * 1.5 + 0.3
    real_stats, fake_stats = fid.FeatureStats.from_features(real), fid.FeatureStats.from_features(fake)
    expected = fid.frechet_distance(real_stats, fake_stats)
    assert expected > 1
    assert fid.fid_from_features(real, fake) == pytest.approx(expected, rel=1e-6)
    assert fid.fid_from_features(real_stats, fake) == pytest.approx(expected, rel=1e-6)
    assert fid.frechet_distance_to_features(real_stats, fake) == pytest.approx(expected, rel=1e-6)
    assert abs(fid.fid_from_features(real, real)) < 1e-9


def test_fid_from_features_uses_sqrtm_for_large_sets(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(50, 6)), rng.normal(size=(60, 6)) + 0.5
    s1, s2 = fid.FeatureStats.from_features(real), fid.FeatureStats.from_features(fake)
    monkeypatch.setattr(fid, "frechet_distance_to_features", None)  # must not be called
    assert fid.fid_from_features(real, fake) == pytest.approx(reference_frechet(s1, s2), rel=1e-8)

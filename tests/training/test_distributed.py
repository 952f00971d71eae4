"""Two CPU processes (gloo) started by `accelerate launch` train the toy task in lockstep."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import save_photos  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(script: str, output: Path, *arguments: str) -> tuple[dict, dict]:
    """Run a tests/training script in 2 CPU processes; each process's final weights."""
    # `--multi_gpu` picks accelerate's torchrun launcher; without CUDA the Trainer joins the processes over gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(REPO / "tests" / "training" / script), str(output),
               *arguments]
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = load_file(output / "rank-0.safetensors"), load_file(output / "rank-1.safetensors")
    assert set(rank0) == set(rank1) and any(k.startswith("ema.") for k in rank0)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    return rank0, rank1


def test_two_processes_keep_identical_weights(tmp_path, sample_photos):
    launch_two("run_toy.py", tmp_path, "--discriminator", "--photos",
               str(save_photos(sample_photos, tmp_path / "photos.npz")),
               "experiment.max_train_steps=4", "experiment.save_every=2")
    # only the main process logs: a header and one row per step
    rows = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and "images_per_s" in rows[0]
    assert (tmp_path / "checkpoint-4" / "random_states_1.pkl").is_file()


def test_two_processes_seed_one_codebook_in_the_warm_start(tmp_path, sample_photos):
    # the latents of both processes are gathered, k-means runs once, the codebook is broadcast
    rank0, _ = launch_two("run_warm_start.py", tmp_path, "--photos", str(save_photos(sample_photos, tmp_path / "p.npz")))
    codebook = rank0["ema.quantize.embedding.weight"]
    assert torch.allclose(codebook.norm(dim=1), torch.ones(len(codebook)), atol=1e-3)  # seeded (random rows are ~0.1)

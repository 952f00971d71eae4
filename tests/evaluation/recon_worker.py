"""Run evaluate_reconstruction from a saved tiny TiTok (launched by test_recon.py, possibly
under `accelerate launch --num_processes 2 --cpu`)."""
import sys

import torch

from onetok.evaluation.fid import KIDProtocol
from onetok.evaluation.inception import load_fid_inception
from onetok.evaluation.lpips import LPIPS
from onetok.evaluation.recon import evaluate_reconstruction
from onetok.models import TiTok


def random_lpips() -> LPIPS:
    """LPIPS with seeded random weights and non-negative heads, like the published ones."""
    torch.manual_seed(0)
    model = LPIPS().eval()
    for head in model.heads():
        head.model[1].weight.data.abs_()
    return model


def main(model_dir: str, photos: str, out_dir: str, inception_weights: str) -> None:
    torch.set_num_threads(1)  # same arithmetic whatever the process count
    model = TiTok.from_pretrained(model_dir)
    inception = load_fid_inception(inception_weights)
    evaluate_reconstruction(model, photos, batch_size=2, out_dir=out_dir, inception=inception, lpips=random_lpips(),
                            kid=KIDProtocol(3, 3), progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])

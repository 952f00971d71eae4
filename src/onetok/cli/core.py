"""tokenize, detokenize, reconstruct, generate, info."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..evaluation.image_metrics import psnr
from ..data.images import ImageReadError, load_image, make_grid, open_rgb, save_image
from ..files import atomic_save_npy, atomic_write_bytes
from ..precision import PRECISIONS, autocast, resolve_precision


class CommandError(ValueError):
    """A user error the CLI reports in one line."""


# ---------------------------------------------------------------- shared pieces

def add_runtime_args(parser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="fp32 (exact) or bf16 autocast; auto picks bf16 on AMX CPUs and CUDA GPUs")
    parser.add_argument("--batch-size", type=int, default=16)


def load_tokenizer(path: str | None, device: str):
    from ..fast import optimize_for_inference
    from ..hub import default_tokenizer_path
    from ..models import TiTok

    return optimize_for_inference(TiTok.from_pretrained(path or default_tokenizer_path()).to(device))


def load_generator(path: str | None, device: str):
    from ..fast import optimize_for_inference
    from ..hub import default_generator_path
    from ..models import MaskGIT

    return optimize_for_inference(MaskGIT.from_pretrained(path or default_generator_path()).to(device))


def read_images(paths: list[str], size: int) -> tuple[list[str], torch.Tensor, list[str]]:
    """Load what can be loaded; return (good paths, (N, 3, size, size), error lines)."""
    good, images, errors, resized = [], [], [], False
    for path in paths:
        try:
            with_size = open_rgb(path).size
            images.append(load_image(path, size))
            good.append(path)
            resized |= with_size != (size, size)
        except ImageReadError as err:
            errors.append(str(err))
    if resized:
        print(f"note: images were resized (shorter side, bicubic) and center-cropped to {size}x{size}", file=sys.stderr)
    stacked = torch.stack(images) if images else torch.empty(0, 3, size, size)
    return good, stacked, errors


def report_errors(errors: list[str], what: str) -> int:
    if not errors:
        return 0
    for line in errors:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"onetok: error: {len(errors)} {what} could not be read (listed above); the others were processed",
          file=sys.stderr)
    return 2


def check_writable(path: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """A folder (no `suffixes`) or a file ending in one of `suffixes` that can be written."""
    path = Path(path)
    if suffixes and (path.is_dir() or path.suffix.lower() not in suffixes):
        example = path / f"out{suffixes[0]}" if path.is_dir() else path.with_suffix(suffixes[0])
        raise CommandError(f"{path}: expected a file name ending in {' or '.join(suffixes)}, e.g. {example}")
    parent = path.parent if path.suffix else path
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot write to {parent}: {err.strerror}") from None
    if not parent.is_dir() or not (parent.stat().st_mode & 0o222):
        raise CommandError(f"cannot write to {parent}")
    return path


def batched(model_fn, inputs: torch.Tensor, batch_size: int, device: str, precision: str) -> torch.Tensor:
    outputs = []
    with autocast(precision, device):
        for start in range(0, len(inputs), batch_size):
            outputs.append(model_fn(inputs[start : start + batch_size].to(device)).cpu())
    return torch.cat(outputs) if outputs else inputs.new_empty(0)


# ---------------------------------------------------------------- commands

def cmd_tokenize(args) -> int:
    model = load_tokenizer(args.model, args.device)
    precision = resolve_precision(args.precision, args.device)
    out = check_writable(Path(args.output), (".json", ".npy"))
    paths, images, errors = read_images(args.images, model.config.crop_size)
    ids = batched(model.tokenize, images, args.batch_size, args.device, precision)
    if out.suffix == ".npy":
        atomic_save_npy(out, ids.numpy())
    else:
        record = {"model": str(args.model or "default"), "num_tokens": model.config.num_latent_tokens,
                  "codebook_size": model.config.codebook_size,
                  "tokens": {p: row.tolist() for p, row in zip(paths, ids)}}
        atomic_write_bytes(out, (json.dumps(record) + "\n").encode())
    print(f"wrote {len(paths)} x {model.config.num_latent_tokens} tokens to {out}")
    return report_errors(errors, "images")


def read_tokens(path: str) -> tuple[list[str], torch.Tensor]:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{file}: no such token file")
    try:
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
            names = [f"{i:05d}" for i in range(len(array))]
        else:
            tokens = json.loads(file.read_text())["tokens"]
            names, array = [Path(p).stem for p in tokens], np.array(list(tokens.values()))
    except (ValueError, KeyError, TypeError) as err:
        raise CommandError(f"{file}: not a token file written by `onetok tokenize` ({err})") from None
    if array.ndim == 1:
        array = array[None]
    return names, torch.from_numpy(np.ascontiguousarray(array))


def cmd_detokenize(args) -> int:
    model = load_tokenizer(args.model, args.device)
    names, tokens = read_tokens(args.tokens)
    tokens = model.check_tokens(tokens)  # wrong count / range -> clear error before any work
    out_dir = check_writable(Path(args.output))
    images = batched(model.detokenize, tokens, args.batch_size, args.device, resolve_precision(args.precision, args.device))
    for name, image in zip(names, images):
        save_image(image, out_dir / f"{name}.png")
    print(f"wrote {len(names)} images to {out_dir}")
    return 0


def cmd_reconstruct(args) -> int:
    model = load_tokenizer(args.model, args.device)
    precision = resolve_precision(args.precision, args.device)
    out = check_writable(Path(args.output), (".png", ".jpg", ".jpeg"))
    paths, images, errors = read_images(args.images, model.config.crop_size)
    if paths:
        recon = batched(lambda x: model.detokenize(model.tokenize(x)), images, args.batch_size, args.device, precision)
        for path, value in zip(paths, psnr(images, recon).tolist()):
            print(f"{path}: PSNR {value:.2f} dB")
        save_image(make_grid(torch.cat([images, recon]), ncol=len(paths)), out)
        k, bits = model.config.num_latent_tokens, model.config.bits_per_token
        print(f"{k} tokens per image ({k * bits / 8:.0f} bytes); originals (top) and reconstructions (bottom) in {out}")
    return report_errors(errors, "images")


def cmd_generate(args) -> int:
    generator = load_generator(args.generator, args.device)
    tokenizer = load_tokenizer(args.tokenizer, args.device)
    if generator.config.image_seq_len != tokenizer.config.num_latent_tokens or \
            generator.config.codebook_size != tokenizer.config.codebook_size:
        raise CommandError("the generator was trained for another tokenizer (token count or codebook size differ)")
    cfg = generator.config
    classes = [args.class_id] * args.num if args.class_id is not None else list(range(args.num))
    condition = torch.tensor([c % cfg.condition_num_classes for c in classes], device=args.device)
    out = check_writable(Path(args.output), (".png", ".jpg", ".jpeg"))
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    with autocast(resolve_precision(args.precision, args.device), args.device):
        ids = generator.generate(
            condition,
            guidance_scale=cfg.guidance_scale if args.guidance is None else args.guidance,
            guidance_decay=cfg.guidance_decay,
            randomize_temperature=cfg.randomize_temperature if args.temperature is None else args.temperature,
            num_sample_steps=args.steps or cfg.num_steps,
        )
        images = tokenizer.detokenize(ids).cpu()
    seconds = time.perf_counter() - started
    save_image(make_grid(images, ncol=min(8, len(images))), out)
    print(f"generated {len(images)} images in {seconds:.2f} s ({len(images) / seconds:.2f} images/s) -> {out}")
    return 0


def cmd_info(args) -> int:
    from ..hub import describe_checkpoint

    for key, value in describe_checkpoint(args.model).items():
        print(f"{key}: {value}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="images -> token ids")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="checkpoint folder, preset or hub id (default: the shipped model)")
    p.add_argument("-o", "--output", default="tokens.json", help=".json or .npy")
    add_runtime_args(p)
    p.set_defaults(func=cmd_tokenize)

    p = subparsers.add_parser("detokenize", help="token ids -> images")
    p.add_argument("tokens", help="a .json or .npy written by `onetok tokenize`")
    p.add_argument("--model")
    p.add_argument("-o", "--output", required=True, help="output folder")
    add_runtime_args(p)
    p.set_defaults(func=cmd_detokenize)

    p = subparsers.add_parser("reconstruct", help="originals beside reconstructions, with PSNR")
    p.add_argument("images", nargs="+")
    p.add_argument("--model")
    p.add_argument("-o", "--output", default="reconstruction.png")
    add_runtime_args(p)
    p.set_defaults(func=cmd_reconstruct)

    p = subparsers.add_parser("generate", help="class-conditional images from a MaskGIT generator")
    p.add_argument("--tokenizer")
    p.add_argument("--generator")
    p.add_argument("--class", dest="class_id", type=int, help="class id (default: one image per class 0..n-1)")
    p.add_argument("-n", "--num", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("-o", "--output", default="generated.png")
    add_runtime_args(p)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("info", help="config, parameters, tokens and bits per image")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)

"""tokenize, detokenize, reconstruct, generate, info: each builds a `Pipeline`, then parses and prints."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data.images import ImageReadError, make_grid, open_rgb, save_image
from ..errors import CommandError
from ..evaluation.image_metrics import psnr
from ..files import atomic_save_npy, atomic_write_bytes
from ..hub import default_generator_path
from ..pipeline import Pipeline
from ..precision import PRECISIONS


# ---------------------------------------------------------------- shared pieces

PRECISION_HELP = ("fp32 (exact), bf16 autocast, int8 (torchao), onnx / onnx-int8 (ONNX Runtime, CPU); auto: per task the "
                  "fastest that stays faithful to fp32, measured once per machine and model")


def add_runtime_args(parser, batch_flag: str = "--batch-size", batch_default: int = 16) -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is one)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument(batch_flag, type=int, default=batch_default, help="images per forward pass")


def check_positive(value: int, flag: str) -> int:
    if value < 1:
        raise CommandError(f"{flag} must be at least 1, got {value}")
    return value


def check_num_tokens(pipe: Pipeline, value: int | None, available: int | None = None) -> int:
    """--num-tokens k (default: all K), checked against the tokenizer (and the ids at hand)."""
    limit = pipe.num_tokens if available is None else min(available, pipe.num_tokens)
    if value is None:
        return limit
    if not 1 <= value <= limit:
        have = f"this tokenizer has {pipe.num_tokens} tokens" + (f" and the file holds {available}" if available else "")
        raise CommandError(f"--num-tokens must lie in 1..{limit} ({have}), got {value}")
    return value


def load_pipeline(args, tokenizer: str | None, generator: str | None | bool = False) -> Pipeline:
    """The Pipeline a command runs on (None: the shipped model; generator False: none)."""
    return Pipeline.from_pretrained(tokenizer, generator, device=args.device, precision=args.precision)


def read_images(paths: list[str], size: int) -> tuple[list[str], torch.Tensor, list[str]]:
    """Load what can be loaded, each path once; return (good paths, (N, 3, size, size), error lines)."""
    from ..data.images import load_image

    good, images, errors, resized = [], [], [], False
    for path in dict.fromkeys(paths):  # a file named twice is read (and counted) once
        try:
            resized |= open_rgb(path).size != (size, size)
            images.append(load_image(path, size))
            good.append(path)
        except ImageReadError as err:
            errors.append(str(err))
    if len(good) + len(errors) < len(paths):
        print(f"note: {len(paths) - len(good) - len(errors)} repeated path(s) were read once", file=sys.stderr)
    if resized:
        print(f"note: images were resized (shorter side, bicubic) and center-cropped to {size}x{size}", file=sys.stderr)
    stacked = torch.stack(images) if images else torch.empty(0, 3, size, size)
    return good, stacked, errors


def report_errors(errors: list[str], what: str, processed: int) -> int:
    if not errors:
        return 0
    for line in errors:
        print(f"skipped: {line}", file=sys.stderr)
    rest = "; the others were processed" if processed else "; nothing was written"
    print(f"onetok: error: {len(errors)} {what} could not be read (listed above){rest}", file=sys.stderr)
    return 2


def check_writable(path: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """A folder (no `suffixes`) or a file ending in one of `suffixes` that can be written."""
    path = Path(path)
    if suffixes and (path.is_dir() or path.suffix.lower() not in suffixes):
        example = path / f"out{suffixes[0]}" if path.is_dir() else path.with_suffix(suffixes[0])
        raise CommandError(f"{path}: expected a file name ending in {' or '.join(suffixes)}, e.g. {example}")
    if not suffixes and path.exists() and not path.is_dir():
        raise CommandError(f"{path} is a file: -o names the folder the images are written to")
    parent = path.parent if suffixes else path
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot write to {parent}: {err.strerror}") from None
    if not parent.is_dir() or not (parent.stat().st_mode & 0o222):
        raise CommandError(f"cannot write to {parent}")
    return path


def unique_names(stems: list[str]) -> list[str]:
    """File stems made unique in order: x, x_2, x_3, ... (two inputs never share an output file)."""
    used: set[str] = set()
    names = []
    for stem in stems:
        name, count = stem, 1
        while name in used:
            count += 1
            name = f"{stem}_{count}"
        used.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- commands

def cmd_tokenize(args) -> int:
    check_positive(args.batch_size, "--batch-size")
    out = check_writable(Path(args.output), (".json", ".npy"))
    pipe = load_pipeline(args, args.model)
    num_tokens = check_num_tokens(pipe, args.num_tokens)
    paths, images, errors = read_images(args.images, pipe.image_size)
    if not paths:  # nothing succeeded: leave any existing output as it was
        return report_errors(errors, "images", 0)
    ids = pipe.tokenize(images, args.batch_size, num_tokens=num_tokens)
    if out.suffix == ".npy":  # (N, k): the shape records the length
        atomic_save_npy(out, ids.numpy())
    else:
        record = {"model": str(args.model or "default"), "num_tokens": num_tokens, "max_tokens": pipe.num_tokens,
                  "codebook_size": pipe.codebook_size, "tokens": {p: row.tolist() for p, row in zip(paths, ids)}}
        atomic_write_bytes(out, (json.dumps(record) + "\n").encode())
    print(f"wrote {len(paths)} x {num_tokens} tokens to {out}")
    return report_errors(errors, "images", len(paths))


def read_tokens(path: str) -> tuple[list[str], torch.Tensor]:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{file}: no such token file")
    try:
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
            names = [f"{i:05d}" for i in range(len(array))]
        else:
            record = json.loads(file.read_text())
            tokens = record["tokens"]
            names, array = [Path(p).stem for p in tokens], np.array(list(tokens.values()))
            if array.ndim != 2 or array.shape[1] != record.get("num_tokens", array.shape[1]):
                raise ValueError(f"it records {record.get('num_tokens')} tokens per image, its rows differ")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CommandError(f"{file}: not a token file written by `onetok tokenize` ({err})") from None
    if array.ndim == 1:
        array = array[None]
    return unique_names(names), torch.from_numpy(np.ascontiguousarray(array))


def cmd_detokenize(args) -> int:
    check_positive(args.batch_size, "--batch-size")
    out_dir = check_writable(Path(args.output))
    names, tokens = read_tokens(args.tokens)
    pipe = load_pipeline(args, args.model)
    tokens = pipe.tokenizer.check_tokens(tokens)  # wrong count / range -> clear error before any work
    tokens = tokens[:, : check_num_tokens(pipe, args.num_tokens, tokens.shape[1])]
    images = pipe.detokenize(tokens, args.batch_size)
    for name, image in zip(names, images):
        save_image(image, out_dir / f"{name}.png")
    print(f"wrote {len(names)} images to {out_dir}")
    return 0


def cmd_reconstruct(args) -> int:
    from ..evaluation.rate_quality import token_bytes

    check_positive(args.batch_size, "--batch-size")
    out = check_writable(Path(args.output), (".png", ".jpg", ".jpeg"))
    pipe = load_pipeline(args, args.model)
    num_tokens = check_num_tokens(pipe, args.num_tokens)
    paths, images, errors = read_images(args.images, pipe.image_size)
    if paths:
        recon = pipe.reconstruct(images, args.batch_size, num_tokens=num_tokens)
        for path, value in zip(paths, psnr(images, recon).tolist()):
            print(f"{path}: PSNR {value:.2f} dB")
        save_image(make_grid(torch.cat([images, recon]), ncol=len(paths)), out)
        print(f"{num_tokens} of {pipe.num_tokens} tokens per image ({token_bytes(pipe.tokenizer, num_tokens):g} bytes); "
              f"originals (top) and reconstructions (bottom) in {out}")
    return report_errors(errors, "images", len(paths))


def cmd_generate(args) -> int:
    check_positive(args.num, "-n/--num")
    check_positive(args.batch_size, "--batch-size")
    out = check_writable(Path(args.output), (".png", ".jpg", ".jpeg"))
    pipe = load_pipeline(args, args.tokenizer, args.generator or default_generator_path())
    if args.class_id is not None:
        classes = [pipe.class_ids(args.class_id)[0]] * args.num
    else:
        classes = [i % pipe.num_classes for i in range(args.num)]
    started = time.perf_counter()
    images = pipe.generate(classes, seed=args.seed, batch_size=args.batch_size, guidance_scale=args.guidance,
                           randomize_temperature=args.temperature, num_sample_steps=args.steps)
    seconds = time.perf_counter() - started
    save_image(make_grid(images, ncol=min(8, len(images))), out)
    names = ", ".join(dict.fromkeys(pipe.class_names[c] for c in classes))
    print(f"generated {len(images)} images ({names}) in {seconds:.2f} s ({len(images) / seconds:.2f} images/s) -> {out}")
    return 0


def cmd_info(args) -> int:
    from ..hub import describe_checkpoint

    for key, value in describe_checkpoint(args.model).items():
        print(f"{key}: {value}")
    return 0


def add_parser(subparsers) -> None:
    # the three commands of one tokenizer: (name, help, handler, input, -o, --num-tokens help)
    tokenizer_commands = [
        ("tokenize", "images -> token ids", cmd_tokenize, ("images", {"nargs": "+"}),
         {"default": "tokens.json", "help": ".json or .npy"}, "keep the first K tokens of each image (default: all)"),
        ("detokenize", "token ids -> images", cmd_detokenize,
         ("tokens", {"help": "a .json or .npy written by `onetok tokenize`"}),
         {"required": True, "help": "output folder"}, "decode only the first K tokens of each image (default: all in the file)"),
        ("reconstruct", "originals beside reconstructions, with PSNR", cmd_reconstruct, ("images", {"nargs": "+"}),
         {"default": "reconstruction.png"}, "reconstruct from the first K tokens only (default: all)"),
    ]
    for name, help_text, func, (input_name, input_kw), output_kw, num_tokens_help in tokenizer_commands:
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument(input_name, **input_kw)
        p.add_argument("--model", help="checkpoint folder, preset or hub id (default: the shipped model)")
        p.add_argument("-o", "--output", **output_kw)
        p.add_argument("--num-tokens", type=int, metavar="K", help=num_tokens_help)
        add_runtime_args(p)
        p.set_defaults(func=func)

    p = subparsers.add_parser("generate", help="class-conditional images from a MaskGIT generator")
    p.add_argument("--tokenizer", help="default: the shipped tokenizer")
    p.add_argument("--generator", help="default: the shipped generator")
    p.add_argument("--class", dest="class_id", help="class id or name (default: classes 0, 1, 2, ... in turn)")
    p.add_argument("-n", "--num", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="image i is drawn from sample_seed(seed, i)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the generator's config)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the generator's config)")
    p.add_argument("--temperature", type=float, help="randomize_temperature (default: the generator's config)")
    p.add_argument("-o", "--output", default="generated.png")
    add_runtime_args(p)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("info", help="config, parameters, tokens and bits per image")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)

"""`onetok sample`: N samples per class -> PNGs, a grid and an ADM-layout .npz (for FID tools).

Sample i (class-major: class c's samples are consecutive) is drawn by `Pipeline.generate` with
seed `sample_seed(--seed, i)`, so its ids depend neither on `--batch` nor on the
number of processes. Process r of R (`accelerate launch`) draws a contiguous range of samples into
its own part file; the main process then streams the parts into one .npz (uint8 N x H x W x 3
under `arr_0`, class ids under `arr_1`), written atomically.
"""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import GUIDANCE_DECAYS
from ..data.images import make_grid, save_image, tensor_to_uint8
from ..errors import SampleError
from ..hub import default_generator_path
from ..pipeline import Pipeline
from ..precision import PRECISIONS
from ..processes import process_state
from .core import PRECISION_HELP, check_writable

PARTS = ".parts"
GRID_CLASSES, GRID_PER_CLASS = 16, 8
NPZ_CHUNK_ROWS = 256


def parse_classes(spec: str, pipe: Pipeline) -> list[int]:
    """'all', or a comma-separated list of class ids and/or class names (checked by the Pipeline)."""
    if spec == "all":
        return list(range(pipe.num_classes))
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise SampleError("--classes is empty")
    return pipe.class_ids(items)


def my_range(count: int, rank: int, world: int) -> range:
    return range(count * rank // world, count * (rank + 1) // world)


def write_npz(path: Path, arrays: dict[str, list[np.ndarray]]) -> None:
    """An uncompressed .npz whose array `name` is its pieces concatenated on axis 0, streamed
    piece by piece (50k images need not fit in memory), then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, pieces in arrays.items():
            first = pieces[0]
            shape = (sum(len(p) for p in pieces), *first.shape[1:])
            header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for piece in pieces:
                    for start in range(0, len(piece), NPZ_CHUNK_ROWS):
                        member.write(np.ascontiguousarray(piece[start : start + NPZ_CHUNK_ROWS]).tobytes())
    os.replace(tmp, path)


def sample_range(pipe: Pipeline, labels: list[int], indices: range, seed: int, batch: int, sampling: dict,
                 part: np.ndarray, image_dir: Path | None, progress: tqdm) -> None:
    """Draw samples `indices` (sample i from `sample_seed(seed, i)`) into `part` (uint8 rows), and as
    PNGs into `image_dir`."""
    for start in range(0, len(indices), batch):
        chunk = indices[start : start + batch]
        images = pipe.generate([labels[i] for i in chunk], seed=seed, first_index=chunk.start, **sampling)
        pixels = tensor_to_uint8(images)
        part[start : start + len(chunk)] = pixels
        if image_dir is not None:
            for i, pixel in zip(chunk, pixels):
                save_image(pixel, image_dir / f"{i:06d}_class{labels[i]}.png")
        progress.update(len(chunk))


def save_grid(parts: list[np.ndarray], classes: list[int], per_class: int, path: Path) -> None:
    """Up to 8 samples (columns) of each of the first 16 classes (rows)."""
    rows = np.concatenate([np.asarray(p) for p in parts]) if len(parts) > 1 else parts[0]
    columns = min(per_class, GRID_PER_CLASS)
    picks = [c * per_class + j for c in range(min(len(classes), GRID_CLASSES)) for j in range(columns)]
    images = torch.from_numpy(np.ascontiguousarray(rows[picks])).permute(0, 3, 1, 2).float() / 255
    save_image(make_grid(images, ncol=columns), path)


def cmd_sample(args) -> int:
    if args.per_class < 1 or args.batch < 1:
        raise SampleError("--per-class and --batch must be at least 1")
    state = process_state()
    pipe = Pipeline.from_pretrained(args.tokenizer, args.generator or default_generator_path(),
                                    device=args.device or state.device, precision=args.precision)
    classes = parse_classes(args.classes, pipe)
    labels = [c for c in classes for _ in range(args.per_class)]
    sampling = {"guidance_scale": args.guidance, "guidance_decay": args.guidance_decay,
                "randomize_temperature": args.temperature, "num_sample_steps": args.steps,
                "softmax_temperature_annealing": args.softmax_annealing or None}

    out = check_writable(Path(args.output))
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    image_dir = None if args.no_images else out / "images"
    if image_dir is not None:
        image_dir.mkdir(parents=True, exist_ok=True)
    size = pipe.image_size
    mine = my_range(len(labels), state.process_index, state.num_processes)
    part_path = out / PARTS / f"part-{state.process_index:05d}.npy"
    part = np.lib.format.open_memmap(part_path, mode="w+", dtype=np.uint8, shape=(len(mine), size, size, 3))

    started = time.perf_counter()
    with tqdm(total=len(mine), unit="sample", disable=not state.is_main_process, dynamic_ncols=True,
              desc=f"sample [{state.process_index + 1}/{state.num_processes}]") as progress:
        sample_range(pipe, labels, mine, args.seed, args.batch, sampling, part, image_dir, progress)
    part.flush()
    del part
    state.wait_for_everyone()
    seconds = time.perf_counter() - started
    if state.is_main_process:
        part_paths = [out / PARTS / f"part-{r:05d}.npy" for r in range(state.num_processes)]
        parts = [np.load(p, mmap_mode="r") for p in part_paths]
        npz = out / f"samples_{len(labels)}x{size}x{size}x3.npz"
        write_npz(npz, {"arr_0": parts, "arr_1": [np.asarray(labels, dtype=np.int64)]})
        save_grid(parts, classes, args.per_class, out / "grid.png")
        del parts
        for p in part_paths:
            p.unlink()
        (out / PARTS).rmdir()
        print(f"{len(labels)} samples ({args.per_class} for each of {len(classes)} classes) in {seconds:.1f} s "
              f"({len(labels) / seconds:.2f} samples/s) -> {npz}, {out / 'grid.png'}")
    state.wait_for_everyone()
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="N samples per class: PNGs, a grid and an ADM .npz for FID")
    p.add_argument("--tokenizer", help="tokenizer checkpoint (default: the shipped model)")
    p.add_argument("--generator", help="generator checkpoint (default: the shipped model)")
    p.add_argument("--classes", default="all", help="'all' or a comma-separated list of class ids or names")
    p.add_argument("--per-class", type=int, default=50, help="samples per class")
    p.add_argument("--batch", type=int, default=64, help="samples per forward pass (per process)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, help="guidance scale (default: the generator's config)")
    p.add_argument("--guidance-decay", choices=GUIDANCE_DECAYS)
    p.add_argument("--temperature", type=float, help="randomize_temperature (Gumbel noise scale)")
    p.add_argument("--steps", type=int, help="sampling steps")
    p.add_argument("--softmax-annealing", action="store_true",
                   help="divide logits by 0.5 + 0.8 * (1 - t/T), as the reference's ImageNet sampling script does")
    p.add_argument("--no-images", action="store_true", help="write only the .npz and the grid, no PNG per sample")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--device", help="default: this process's accelerator device")
    p.set_defaults(func=cmd_sample)

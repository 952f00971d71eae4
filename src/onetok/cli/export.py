"""`onetok export`: a tokenizer (and optionally a generator) as ONNX files that run without PyTorch."""
from __future__ import annotations

from pathlib import Path

from .core import check_writable


def cmd_export(args) -> int:
    from ..export import export_onnx
    from ..hub import default_generator_path, default_tokenizer_path
    from ..models import MaskGIT, TiTok

    out = check_writable(Path(args.output))
    tokenizer = None if args.no_tokenizer else TiTok.from_pretrained(args.model or default_tokenizer_path())
    generator = None
    if args.generator is not None:
        generator = MaskGIT.from_pretrained(default_generator_path() if args.generator == "default" else args.generator)
    folder = export_onnx(out, tokenizer, generator, int8=args.int8)
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            print(path)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="tokenizer / generator -> ONNX files (run them with onetok.onnx)")
    p.add_argument("model", nargs="?", help="tokenizer: checkpoint folder, preset or hub id (default: the shipped one)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--generator", nargs="?", const="default",
                   help="also export this generator's sampling step (no value: the shipped generator)")
    p.add_argument("--no-tokenizer", action="store_true", help="export the generator only")
    p.add_argument("--int8", action="store_true",
                   help="also write int8 twins (ONNX Runtime dynamic quantization of the Linear layers)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=cmd_export)

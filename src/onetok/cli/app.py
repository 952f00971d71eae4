"""`onetok app`: serve the web demo (needs the `app` extra: pip install 'onetok[app]')."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "app", help="serve the web demo in a browser (Gradio)",
        description="Tokenize, edit and reconstruct photos and sample a generator in the browser. "
        "With no --tokenizer, the tokenizer and generator shipped with onetok are served.",
    )
    parser.add_argument(
        "--tokenizer", action="append", default=[], metavar="FOLDER_OR_HUB_ID",
        help="a tokenizer checkpoint; repeat to compare several side by side (e.g. 32, 64 and 128 tokens)",
    )
    parser.add_argument("--generator", metavar="FOLDER_OR_HUB_ID", help="a MaskGIT generator checkpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the models (ValueError with one line when they cannot be used), then serve until stopped."""
    try:
        from onetok.app.ui import serve
    except ImportError as err:
        raise SystemExit(f"onetok app needs Gradio ({err}); install it with: pip install 'onetok[app]'") from None
    from onetok.app.models import load_models

    models = load_models(args.tokenizer, args.generator)
    where = f"http://{args.host}:{args.port}"
    print(f"onetok app: {len(models.tokenizers)} tokenizer(s) on {where} (Ctrl+C stops)", flush=True)
    serve(models, args.host, args.port, args.share)
    return 0


if __name__ == "__main__":  # python -m onetok.cli.app ... == onetok app ...
    from onetok.cli.main import main

    sys.exit(main(["app", *sys.argv[1:]]))

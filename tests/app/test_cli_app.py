"""`onetok app`: arguments, defaults that keep the server private, one-line errors."""
import argparse

from onetok.cli import app as app_cli
from onetok.cli.main import main

from .conftest import need_module


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    app_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["app", *argv])


def test_defaults_bind_locally_without_a_share_link():
    args = parse()
    assert (args.host, args.port, args.share, args.tokenizer, args.generator) == ("127.0.0.1", 7860, False, [], None)
    args = parse("--tokenizer", "a", "--tokenizer", "b", "--generator", "g", "--port", "9000", "--share")
    assert (args.tokenizer, args.generator, args.port, args.share) == (["a", "b"], "g", 9000, True)


def test_run_serves_the_loaded_models(checkpoint_folders, monkeypatch, capsys):
    need_module("gradio")
    import onetok.app.ui

    served = {}
    monkeypatch.setattr(onetok.app.ui, "serve", lambda models, host, port, share: served.update(
        labels=[t.label for t in models.tokenizers], host=host, port=port, share=share))
    assert main(["app", "--tokenizer", checkpoint_folders["tokenizer_32"], "--port", "7999"]) == 0
    assert served == {"labels": ["32 tokens · titok_tiny_32"], "host": "127.0.0.1", "port": 7999, "share": False}
    assert "http://127.0.0.1:7999" in capsys.readouterr().out


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    need_module("gradio")
    assert main(["app", "--tokenizer", str(tmp_path / "nowhere" / "model")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onetok: error: ") and "\n" not in err and "nowhere" in err


def test_a_generator_without_its_tokenizer_is_one_line(checkpoint_folders, capsys):
    need_module("gradio")
    argv = ["app", "--tokenizer", checkpoint_folders["tokenizer_16"], "--generator", checkpoint_folders["generator"]]
    assert main(argv) == 2
    assert "load a tokenizer with the same (--tokenizer)" in capsys.readouterr().err

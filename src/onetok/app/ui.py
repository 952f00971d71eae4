"""The Gradio page: layout and event wiring only; the work is done in `logic`."""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field, replace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo

import gradio as gr  # noqa: E402

from onetok.app import logic  # noqa: E402
from onetok.app.models import AppModels, LoadedGenerator, LoadedTokenizer  # noqa: E402

INTRO = """# onetok: a whole image in {tokens} tokens
A 1D tokenizer (TiTok) turns a whole image into a short sequence of integer ids and back.
Upload a photo (JPEG, PNG or WebP, at most {mb} MB and {mp:g} megapixels): it is centre-cropped,
tokenized and decoded again. Click a token id to change it and watch the image change."""
IMAGE_HEIGHT = 280
SHOWN_IMAGE = {"format": "png", "interactive": False, "buttons": ["download", "fullscreen"]}
# small crops are scaled up to fill their box, with sharp pixels so the effect of each token stays visible
CSS = """
#input-image img, #recon-image img, #edited-image img, #generated-image img
  {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
#comparison img {image-rendering: pixelated}
"""


def keep() -> dict:
    """An output left as it is (a fresh dict each time: Gradio consumes update dicts)."""
    return gr.update()


def problem(err: ValueError) -> str:
    """Show a readable message (toast) and return it for a Markdown box; the server carries on."""
    message = html.escape(str(err))
    gr.Warning(message)
    return f"**Could not do that:** {message}"


@dataclass
class Session:
    """What one browser tab has computed: reconstructions per tokenizer label, and the edit in progress."""

    results: dict[str, logic.Reconstruction] = field(default_factory=dict)
    selected: str = ""
    edited: list[int] = field(default_factory=list)


def stats_markdown(result: logic.Reconstruction, tokenizer: LoadedTokenizer) -> str:
    raw = result.input.size  # bytes of the uint8 RGB crop
    return (
        f"**PSNR {result.psnr:.2f} dB** · {tokenizer.num_tokens} tokens from a codebook of "
        f"{tokenizer.codebook_size} = **{result.num_bytes} bytes per image** "
        f"({raw / result.num_bytes:,.0f}x smaller than the {raw:,}-byte RGB crop)"
    )


def grid_rows(ids: list[int]) -> list[list]:
    return [["" if value is None else value for value in row] for row in logic.token_grid(ids)]


class Handlers:
    """The page's event handlers; each returns values for its outputs, in order."""

    def __init__(self, models: AppModels):
        self.models = models

    # reconstruct tab outputs: input, reconstruction, stats, grid, session, edited image, edit note, slider, gallery
    def show(self, state: Session, label: str, gallery: list | None = None) -> tuple:
        tokenizer = self.models.tokenizer(label)
        result = state.results[label]
        state = replace(state, selected=label, edited=list(result.ids))
        return (result.input, result.output, stats_markdown(result, tokenizer), grid_rows(result.ids),
                state, None, "", gr.update(maximum=tokenizer.num_tokens), keep() if gallery is None else gallery)

    @staticmethod
    def cleared(note: str) -> tuple:
        return None, None, note, [], Session(), None, "", keep(), []

    def upload(self, path: str | None, label: str, progress=gr.Progress()) -> tuple:
        if path is None:
            return self.cleared("")
        results, gallery = {}, []
        try:
            for index, tokenizer in enumerate(self.models.tokenizers):
                progress(index / len(self.models.tokenizers), desc=f"reconstructing with {tokenizer.label}")
                image = logic.preprocess_upload(path, tokenizer.crop_size)
                result = results[tokenizer.label] = logic.reconstruct(tokenizer.pipeline, image)
                gallery.append((result.output, f"{tokenizer.num_tokens} tokens · {result.psnr:.1f} dB · {result.num_bytes} B"))
        except ValueError as err:
            return self.cleared(problem(err))
        gallery.insert(0, (results[self.models.tokenizers[0].label].input, "input"))
        return self.show(Session(results), label, gallery)

    def choose(self, state: Session, label: str) -> tuple:
        if label not in state.results:  # nothing uploaded yet
            return tuple(keep() for _ in range(9))
        return self.show(state, label)

    # editing outputs: edited image, grid, edit note, session
    def edited(self, state: Session, ids: list[int], note: str) -> tuple:
        tokenizer = self.models.tokenizer(state.selected)
        image = logic.decode_ids(tokenizer.pipeline, ids)
        note += f" PSNR to the input: {logic.psnr(state.results[state.selected].input, image):.2f} dB."
        return image, grid_rows(ids), note, replace(state, edited=ids)

    def current(self, state: Session) -> LoadedTokenizer:
        if not state.selected:
            raise logic.TokenEditError("upload a photo first")
        return self.models.tokenizer(state.selected)

    def select(self, state: Session, event: gr.SelectData) -> tuple:
        try:
            tokenizer = self.current(state)
            where = logic.grid_position(*event.index, tokenizer.num_tokens)
        except ValueError as err:
            problem(err)
            return keep(), keep()
        return where, state.edited[where]

    def replace_token(self, state: Session, where: float | None, value: float | None) -> tuple:
        try:
            tokenizer = self.current(state)
            if where is None or value is None:
                raise logic.TokenEditError("give a token position and a new id")
            ids = logic.replace_token(state.edited, int(where), int(value), tokenizer.codebook_size)
        except ValueError as err:
            return keep(), keep(), problem(err), state
        return self.edited(state, ids, f"Token {int(where)} set to {int(value)}.")

    def randomise(self, state: Session, how_many: float, seed: float | None) -> tuple:
        try:
            tokenizer = self.current(state)
            ids, changed = logic.randomise_tokens(state.edited, int(how_many), tokenizer.codebook_size, int(seed or 0))
        except ValueError as err:
            return keep(), keep(), problem(err), state
        return self.edited(state, ids, f"Randomised tokens {', '.join(map(str, changed))}.")

    def undo(self, state: Session) -> tuple:
        try:
            self.current(state)
        except ValueError as err:
            return keep(), keep(), problem(err), state
        return self.edited(state, list(state.results[state.selected].ids), "Edits undone.")

    def generate(self, class_id, scale, temperature, steps, seed, count, progress=gr.Progress()) -> tuple:
        gen: LoadedGenerator = self.models.generator
        try:
            settings = logic.GenerationSettings(
                int(class_id), float(scale), float(temperature), int(steps), int(seed or 0), int(count)
            )
            result = logic.generate(
                gen.pipeline, settings, progress=lambda fraction, message: progress(fraction, desc=message)
            )
        except ValueError as err:
            return keep(), problem(err)
        name = html.escape(gen.class_names[settings.class_id])
        return result.grid, f"{len(result.images)} images of **{name}** in **{result.seconds:.2f} s**"


def reconstruct_tab(models: AppModels, handlers: Handlers) -> None:
    labels = [tokenizer.label for tokenizer in models.tokenizers]
    session = gr.State(Session())
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Photo", file_types=["image"], type="filepath", height=140, elem_id="upload")
            if models.examples:
                gr.Examples([[str(path)] for path in models.examples], inputs=[upload])
            choice = gr.Radio(labels, value=labels[0], label="Tokenizer", elem_id="tokenizer-choice")
        source_image = gr.Image(label="Input (centre crop)", height=IMAGE_HEIGHT, **SHOWN_IMAGE, elem_id="input-image")
        recon_image = gr.Image(label="Reconstruction", height=IMAGE_HEIGHT, **SHOWN_IMAGE, elem_id="recon-image")
    stats = gr.Markdown(elem_id="recon-stats")
    comparison = gr.Gallery(
        label="Every loaded tokenizer side by side", columns=max(4, len(labels) + 1), height=IMAGE_HEIGHT + 40, format="png",
        object_fit="contain", fit_columns=False, visible=len(labels) > 1, elem_id="comparison",
    )
    with gr.Row():
        with gr.Column(scale=2):
            grid = gr.Dataframe(
                headers=[str(column) for column in range(logic.GRID_COLUMNS)],
                label="Token ids, row by row (click one to edit it)", interactive=False, elem_id="token-grid",
            )
            with gr.Row():
                position = gr.Number(label="Token position", precision=0, minimum=0, elem_id="edit-position")
                new_id = gr.Number(label="New id", precision=0, minimum=0, elem_id="edit-id")
                replace_button = gr.Button("Replace this token", elem_id="replace-button")
            with gr.Row():
                count = gr.Slider(1, models.tokenizers[0].num_tokens, value=4, step=1, label="Tokens to randomise")
                edit_seed = gr.Number(label="Seed", value=0, precision=0)
            with gr.Row():
                randomise_button = gr.Button("Randomise tokens", elem_id="randomise-button")
                undo_button = gr.Button("Undo edits", elem_id="undo-button")
        with gr.Column(scale=1):
            edited_image = gr.Image(label="Decoded from the edited tokens", height=IMAGE_HEIGHT, **SHOWN_IMAGE, elem_id="edited-image")
            edit_note = gr.Markdown(elem_id="edit-note")

    shown = [source_image, recon_image, stats, grid, session, edited_image, edit_note, count, comparison]
    edits = [edited_image, grid, edit_note, session]
    upload.change(handlers.upload, [upload, choice], shown, api_name="reconstruct")
    choice.change(handlers.choose, [session, choice], shown, api_name="show_tokenizer")
    grid.select(handlers.select, [session], [position, new_id], api_name="select_token")
    replace_button.click(handlers.replace_token, [session, position, new_id], edits, api_name="replace_token")
    randomise_button.click(handlers.randomise, [session, count, edit_seed], edits, api_name="randomise_tokens")
    undo_button.click(handlers.undo, [session], edits, api_name="undo_edits")


def generate_tab(gen: LoadedGenerator, handlers: Handlers) -> None:
    gr.Markdown(
        f"MaskGIT generator **{gen.name}** predicts {gen.tokenizer.num_tokens} ids, decoded by "
        f"**{gen.tokenizer.name}**. The same seed gives the same images as `onetok generate --seed`."
    )
    with gr.Row():
        with gr.Column(scale=1):
            inputs = [
                gr.Dropdown([(name, index) for index, name in enumerate(gen.class_names)], value=0, label="Class",
                            elem_id="class-choice"),
                gr.Slider(0, 10, value=gen.sampling["guidance_scale"], step=0.1, label="Guidance scale"),
                gr.Slider(0, 15, value=gen.sampling["randomize_temperature"], step=0.1, label="Temperature"),
                gr.Slider(1, 64, value=gen.sampling["num_sample_steps"], step=1, label="Steps"),
                gr.Number(label="Seed", value=0, precision=0),
                gr.Slider(1, logic.MAX_IMAGES_PER_RUN, value=4, step=1, label="Images"),
            ]
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        with gr.Column(scale=2):
            samples = gr.Image(label="Samples", height=2 * IMAGE_HEIGHT, **SHOWN_IMAGE, elem_id="generated-image")
            stats = gr.Markdown(elem_id="generate-stats")
    button.click(handlers.generate, inputs, [samples, stats], api_name="generate")


def build_demo(models: AppModels) -> gr.Blocks:
    handlers = Handlers(models)
    # uploads and outputs live in Gradio's cache: drop files older than an hour, every ten minutes
    with gr.Blocks(title="onetok", delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO.format(
            tokens=" / ".join(str(t.num_tokens) for t in models.tokenizers), mb=logic.MAX_UPLOAD_MB, mp=logic.MAX_UPLOAD_PIXELS / 1e6
        ))
        with gr.Tab("Reconstruct"):
            reconstruct_tab(models, handlers)
        if models.generator is not None:
            with gr.Tab("Generate"):
                generate_tab(models.generator, handlers)
    return demo


def serve(models: AppModels, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True) -> gr.Blocks:
    """Build the page and start serving it; `block=False` returns at once (tests)."""
    demo = build_demo(models)
    demo.queue(default_concurrency_limit=1)  # one model call at a time: a small CPU gains nothing from more
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=f"{logic.MAX_UPLOAD_MB}mb",
        css=CSS,
        ssr_mode=False,
        show_error=False,  # unexpected failures show a short "Error", never a stack trace
        quiet=True,
        prevent_thread_lock=not block,
    )
    return demo

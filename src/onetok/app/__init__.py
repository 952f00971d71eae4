"""The web demo (`onetok app`): logic.py holds what it computes, models.py what it loads, ui.py the Gradio page."""

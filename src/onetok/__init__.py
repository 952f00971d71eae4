"""onetok: compact 1D image tokenization (TiTok) and fast MaskGIT generation."""
__version__ = "0.1.0"

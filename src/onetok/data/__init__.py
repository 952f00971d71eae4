"""Image sources, preprocessing and token datasets."""

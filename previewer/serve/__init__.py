"""The HTTP service (``previewer serve``): a FilePreviews-compatible API over :mod:`previewer.api`."""

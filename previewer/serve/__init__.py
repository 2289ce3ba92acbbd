"""The HTTP service (``previewer serve``): a FilePreviews-compatible API over the library."""

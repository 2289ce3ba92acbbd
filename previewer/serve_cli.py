"""The ``previewer serve`` command: runs the HTTP service (:mod:`previewer.serve`)."""

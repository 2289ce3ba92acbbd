"""``python -m previewer``: the command line."""

from previewer.cli import main

if __name__ == "__main__":
    main()

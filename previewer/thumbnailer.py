"""``previewer thumbnail`` and ``previewer desktop``: previewer as the desktop's thumbnailer.

``previewer thumbnail --size N INPUT OUTPUT`` follows the calling convention of GNOME's and
Xfce's ``.thumbnailer`` entries (``Exec=previewer thumbnail --size %s %i %o``): it writes one
8-bit RGBA, non-interlaced PNG whose longest side is N (never larger than a raster source) and
exits 0, or exits non-zero and writes nothing. It writes nothing but OUTPUT and private
temporary directories under ``$TMPDIR`` (or ``/tmp``), so it works inside GNOME's bubblewrap
sandbox. ``previewer desktop install`` writes the ``.thumbnailer`` entry, with the MIME types of
the converters available on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from previewer.errors import InvalidOptionsError

__all__ = ["desktop", "entry_text", "mime_types", "thumbnail", "thumbnailer_dir"]

ENTRY_NAME = "previewer.thumbnailer"
SYSTEM_DIR = Path("/usr/share/thumbnailers")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(context_settings=CONTEXT)
@click.option(
    "-s",
    "--size",
    type=click.IntRange(min=1, max=4096),
    required=True,
    help="Longest side of the thumbnail in pixels (%s in a .thumbnailer entry).",
)
@click.argument("input_", metavar="INPUT")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def thumbnail(size: int, input_: str, output: Path) -> None:
    """Write one RGBA PNG thumbnail of INPUT (a path or file:// URI) to OUTPUT.

    The thumbnailer calling convention: exit 0 with OUTPUT written, or non-zero with nothing
    written. The first page is used; raster sources are never enlarged.

    \b
    Examples:
      previewer thumbnail --size 256 report.pdf thumb.png
      previewer thumbnail --size 128 'file:///home/me/a%20b.psd' /tmp/t.png
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer.api import render
    from previewer.freedesktop import save_rgba_png, uri_to_path
    from previewer.output import write_file

    source = uri_to_path(input_)
    image = render(source, page=1, size=size)
    write_file(output, lambda fh: save_rgba_png(image, fh))


def mime_types() -> list[str]:
    """Return the MIME types the available converters handle, without ``type/*`` wildcards.

    Returns:
        Sorted, unique MIME types.
    """
    from previewer.registry import Registry

    registry = Registry()
    found: set[str] = set()
    for entry in registry.entries:
        if entry.converter is None or not registry.availability(entry).ok:
            continue
        found.update(m for m in entry.mime_types if not m.endswith("/*"))
    return sorted(found)


def entry_text(types: list[str] | None = None) -> str:
    """Return the ``.thumbnailer`` entry.

    Args:
        types: MIME types to list (default: :func:`mime_types`).

    Returns:
        The file's text.
    """
    listed = mime_types() if types is None else types
    return (
        "[Thumbnailer Entry]\n"
        "TryExec=previewer\n"
        "Exec=previewer thumbnail --size %s %i %o\n"
        f"MimeType={''.join(m + ';' for m in listed)}\n"
    )


def thumbnailer_dir(*, system: bool, environ: dict[str, str] | None = None) -> Path:
    """Return where the entry goes: ``$XDG_DATA_HOME/thumbnailers`` or ``/usr/share/thumbnailers``.

    Args:
        system: The system-wide directory instead of the user's.
        environ: Environment to read (default: ``os.environ``).

    Returns:
        The directory.
    """
    if system:
        return SYSTEM_DIR
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "thumbnailers"


_where = click.option(
    "--user/--system",
    "user",
    default=True,
    help="$XDG_DATA_HOME/thumbnailers (default) or /usr/share/thumbnailers.",
)


@click.group(context_settings=CONTEXT)
def desktop() -> None:
    """Register previewer as the desktop's thumbnailer (GNOME, Xfce and others).

    \b
    Examples:
      previewer desktop install
      previewer desktop install --system
      previewer desktop install --print
      previewer desktop uninstall --user
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped


@desktop.command(context_settings=CONTEXT)
@_where
@click.option(
    "--print", "print_", is_flag=True, help="Print the entry to stdout instead of installing it."
)
def install(user: bool, print_: bool) -> None:
    """Write previewer.thumbnailer listing the MIME types available converters handle."""
    from previewer.output import write_file

    text = entry_text()
    if print_:
        click.echo(text, nl=False)
        return
    if "MimeType=\n" in text:
        raise InvalidOptionsError("no converter is available; nothing to register")
    path = thumbnailer_dir(system=not user) / ENTRY_NAME
    write_file(path, text.encode())
    click.echo(str(path))


@desktop.command(context_settings=CONTEXT)
@_where
def uninstall(user: bool) -> None:
    """Remove previewer.thumbnailer."""
    from previewer.errors import OutputError

    path = thumbnailer_dir(system=not user) / ENTRY_NAME
    try:
        path.unlink()
    except FileNotFoundError:
        click.echo(f"previewer: {path} was not installed", err=True)
        return
    except OSError as exc:
        raise OutputError(f"cannot remove: {exc.strerror or exc}", path=str(path)) from exc
    click.echo(str(path))

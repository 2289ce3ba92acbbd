"""The ``info`` and ``converters`` commands: describe inputs, list converters."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from previewer.cli.group import CONTEXT, cli
from previewer.cli.messages import _report_error
from previewer.cli_limits import limit_options, limits_from_params
from previewer.errors import InvalidOptionsError, PreviewerError
from previewer.reporting import ExitCode
from previewer.results import Status

__all__ = ["converters_command", "info"]


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--password", envvar="PREVIEWER_PASSWORD", help="Password for encrypted documents.")
@click.option("--converter", "converter_name", metavar="NAME", help="Force this converter.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input.")
@click.option(
    "--metadata",
    "metadata_keys",
    metavar="KEYS",
    envvar="PREVIEWER_METADATA",
    help="Also extract these, comma-separated: checksum, exif, gps, text, ocr, multimedia, "
    "psd, or all (every key but gps).",
)
@limit_options
def info(
    inputs: tuple[str, ...],
    password: str | None,
    converter_name: str | None,
    as_json: bool,
    metadata_keys: str | None,
    **limit_params: Any,
) -> int:
    """Describe INPUTS: sniffed MIME type, converter, pages and page sizes, bytes, SHA-256.

    With --metadata, also the metadata asked for ("extracted" in the JSON): checksums (sha256,
    sha1, md5), EXIF tags, GPS position (only when gps is named), the text layer, OCR text
    (Tesseract), audio/video streams (ffprobe), Photoshop layers.

    \b
    Examples:
      previewer info report.pdf
      previewer info scan.tiff photo.jpg --json
      previewer info secret.pdf --password hunter2
      previewer info photo.jpg --metadata exif,gps,checksum --json
      previewer info scan.pdf --metadata text,ocr
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer import api
    from previewer.extraction import parse_keys
    from previewer.registry import Registry

    keys: tuple[str, ...] | None = None
    if metadata_keys is not None:
        try:
            keys = parse_keys(metadata_keys)
        except InvalidOptionsError as exc:
            raise click.BadParameter(exc.message, param_hint="'--metadata'") from exc
    registry = Registry()
    limits = limits_from_params(limit_params)
    failures: list[PreviewerError] = []
    for item in inputs:
        try:
            facts = api.info(
                sys.stdin.buffer if item == "-" else item,
                password=password,
                converter=converter_name,
                limits=limits,
                name="stdin" if item == "-" else None,
                registry=registry,
                metadata=keys,
            )
        except PreviewerError as exc:
            failures.append(exc)
            if as_json:
                click.echo(
                    json.dumps({"input": item, "status": Status.FAILED, "error": exc.summary()})
                )
            _report_error(exc)
            continue
        if as_json:
            click.echo(json.dumps({**facts.to_dict(), "status": "ok"}, ensure_ascii=False))
        else:
            _print_info(facts)
    if not failures:
        return int(ExitCode.OK)
    if len(inputs) == 1:
        return int(failures[0].exit_code)
    return int(ExitCode.BATCH_PARTIAL)


def _print_info(facts: Any) -> None:
    rows: list[tuple[str, str]] = [
        ("mime", facts.mime),
        ("converter", f"{facts.converter} ({facts.engine})"),
        (
            "pages",
            str(facts.pages)
            if facts.pages is not None
            else f"unknown (damaged; {len(facts.page_sizes)} found)",
        ),
    ]
    shown = facts.page_sizes[:10]
    for number, (w, h) in enumerate(shown, start=1):
        rows.append((f"page {number}", f"{w:g} x {h:g} {facts.units}"))
    if len(facts.page_sizes) > len(shown):
        total = facts.pages if facts.pages is not None else len(facts.page_sizes)
        rows.append(("", f"... {total - len(shown)} more pages"))
    rows.append(("bytes", f"{facts.bytes:,}"))
    rows.append(("sha256", facts.sha256))
    for key, value in facts.metadata.items():
        if value not in ("", None, [], {}):
            rows.append((key, json.dumps(value) if isinstance(value, (list, dict)) else str(value)))
    if facts.extracted is not None:
        for key, value in facts.extracted.items():
            rows.extend(_extracted_rows(key, value))
    click.echo(facts.input)
    for key, value in rows:
        click.echo(f"  {key:<17} {value}")


SHOWN_TEXT = 300
"""Characters of extracted text the human output shows (--json gives all of it)."""


def _extracted_rows(key: str, value: Any) -> list[tuple[str, str]]:
    """Rows of one extracted value: nested dicts as dotted keys, long text shortened."""
    if isinstance(value, dict) and value:
        rows: list[tuple[str, str]] = []
        for sub, item in value.items():
            rows.extend(_extracted_rows(f"{key}.{sub}", item))
        return rows
    if value is None or value == {}:
        return [(key, "-")]
    if isinstance(value, str):
        flat = " ".join(value.split())
        if len(flat) > SHOWN_TEXT:
            flat = f"{flat[:SHOWN_TEXT]}... ({len(value):,} characters)"
        return [(key, flat)]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(f"{key}[{i}]", json.dumps(v, ensure_ascii=False)) for i, v in enumerate(value)]
    return [(key, json.dumps(value, ensure_ascii=False) if isinstance(value, list) else str(value))]


@cli.command("converters", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per converter.")
def converters_command(as_json: bool) -> int:
    """List converters: MIME types, engine, version, and whether they are available.

    \b
    Examples:
      previewer converters
      previewer converters --json
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer import api

    listing = api.list_converters()
    for conv in listing:
        if as_json:
            click.echo(json.dumps(conv.to_dict()))
            continue
        mark = "✓" if conv.available else "✗"
        engine = f"{conv.engine} {conv.version}" if conv.version else conv.engine
        click.echo(f"{mark} {conv.name:<18} {engine}")
        click.echo(f"    types:  {', '.join(conv.mime_types) or '-'}")
        click.echo(f"    isolation: {conv.isolation}")
        if conv.origin != "builtin":
            click.echo(f"    from:   {conv.origin}")
        if not conv.available:
            click.echo(f"    reason: {conv.reason}")
    return int(ExitCode.OK)

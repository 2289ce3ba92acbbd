"""Audio and video facts of an input through ffprobe: duration, bit rate, streams.

ffprobe runs isolated (no network, only its input visible) under the timeout, with the demuxer
pinned to the one the sniffed MIME type names (``-f X -format_whitelist X``) and only the
``file`` protocol allowed: a playlist disguised as ``.mp4`` is refused instead of being followed
to other files (ENGINES.md, ffmpeg 5.1). Types that are neither audio nor video (or whose
demuxer previewer does not know) have no such facts: ffprobe is not even run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from previewer.budgets import Limits
from previewer.converters import AUDIO_DEMUXERS, VIDEO_DEMUXERS
from previewer.errors import EngineError, EngineUnavailableError

__all__ = ["DEMUXERS", "FFPROBE", "demuxer", "ffprobe_path", "probe"]

FFPROBE = "ffprobe"
"""The program run (Debian: ``ffmpeg``)."""

_MORE_DEMUXERS: dict[str, str] = {
    "video/MP2T": "mpegts",
    "audio/mp3": "mp3",
    "audio/m4a": "mov",
    "audio/opus": "ogg",
    "audio/x-vorbis+ogg": "ogg",
    "audio/x-matroska": "matroska",
    "audio/amr": "amr",
}
"""Media types no converter claims whose facts ffprobe can still give."""

DEMUXERS: dict[str, str] = {**VIDEO_DEMUXERS, **AUDIO_DEMUXERS, **_MORE_DEMUXERS}
"""Sniffed MIME type -> the ffmpeg demuxer that must read it (``ffprobe -f``): the video and
audio converters' own tables, so a file's facts are read exactly as its previews are."""


def demuxer(mime: str) -> str | None:
    """Return the ffmpeg demuxer for ``mime``, or None when it is not a known media type.

    Args:
        mime: The sniffed MIME type.

    Returns:
        The demuxer's short name (``"mov"``, ``"matroska"``...).
    """
    return DEMUXERS.get(mime)


def ffprobe_path() -> str | None:
    """Return ffprobe's absolute path, or None when it is not installed."""
    return shutil.which(FFPROBE, path="/usr/local/bin:/usr/bin:/bin")


def probe(path: Path, mime: str, limits: Limits, workdir: Path) -> dict[str, Any] | None:
    """Describe an audio or video file: container, duration, bit rate, streams.

    Args:
        path: The input file.
        mime: Its sniffed MIME type.
        limits: Budgets (``timeout`` bounds ffprobe; ``allow_unisolated`` as for engines).
        workdir: A private directory ffprobe runs in.

    Returns:
        ``{"container", "duration", "bit_rate", "tags", "streams": [...]}`` (seconds, bits per
        second), each stream with ``index``, ``type`` (``video``/``audio``/``subtitle``...),
        ``codec`` and, where they apply, ``width``, ``height``, ``frame_rate``,
        ``sample_rate``, ``channels``, ``channel_layout``, ``duration``, ``bit_rate``; None
        when ``mime`` is not a media type previewer knows.

    Raises:
        EngineUnavailableError: ffprobe is not installed.
        EngineError: ffprobe could not read the file (its message says why).
        EngineTimeoutError: ffprobe ran past the timeout.
    """
    demux = demuxer(mime)
    if demux is None:
        return None
    program = ffprobe_path()
    if program is None:
        raise EngineUnavailableError(
            "ffprobe is not installed, so audio and video facts cannot be read",
            hint="install it: apt-get install ffmpeg",
        )
    from previewer import programs

    argv = [
        program,
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-protocol_whitelist",
        "file",
        "-f",
        demux,
        "-format_whitelist",
        demux,
        "file:" + os.path.abspath(path),
    ]
    result = programs.run(
        argv,
        timeout=limits.timeout,
        cwd=workdir,
        read=(path,),
        allow_unisolated=limits.allow_unisolated,
    )
    try:
        data = json.loads(result.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        raise EngineError(f"ffprobe printed no JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise EngineError("ffprobe printed an unexpected JSON shape")
    return summarise(data)


def summarise(data: Mapping[str, Any]) -> dict[str, Any]:
    """Reduce ffprobe's ``-show_format -show_streams`` JSON to previewer's facts.

    Args:
        data: ffprobe's JSON output.

    Returns:
        See :func:`probe`.
    """
    fmt = data.get("format") if isinstance(data.get("format"), Mapping) else {}
    assert isinstance(fmt, Mapping)
    streams = []
    for stream in data.get("streams") or []:
        if not isinstance(stream, Mapping):
            continue
        item: dict[str, Any] = {
            "index": _int(stream.get("index")),
            "type": stream.get("codec_type"),
            "codec": stream.get("codec_name"),
        }
        if stream.get("codec_type") == "video":
            item.update(
                width=_int(stream.get("width")),
                height=_int(stream.get("height")),
                frame_rate=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
                pixel_format=stream.get("pix_fmt"),
            )
        elif stream.get("codec_type") == "audio":
            item.update(
                sample_rate=_int(stream.get("sample_rate")),
                channels=_int(stream.get("channels")),
                channel_layout=stream.get("channel_layout"),
            )
        item.update(
            duration=_float(stream.get("duration")),
            bit_rate=_int(stream.get("bit_rate")),
        )
        streams.append({k: v for k, v in item.items() if v is not None})
    tags = fmt.get("tags")
    return {
        "container": fmt.get("format_name"),
        "duration": _float(fmt.get("duration")),
        "bit_rate": _int(fmt.get("bit_rate")),
        "tags": dict(tags) if isinstance(tags, Mapping) else {},
        "streams": streams,
    }


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rate(value: Any) -> float | None:
    """``"30000/1001"`` -> 29.97; None for ``"0/0"`` or garbage."""
    if not isinstance(value, str) or "/" not in value:
        return _float(value)
    num, _, den = value.partition("/")
    top, bottom = _float(num), _float(den)
    if top is None or not bottom:
        return None
    return round(top / bottom, 3) or None

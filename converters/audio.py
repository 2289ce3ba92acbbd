"""Audio files (MP3, WAV, AIFF, Ogg Vorbis/Opus, FLAC, M4A/AAC, WMA, WebM audio) through ffmpeg.

An audio file is a one-page document:

- its embedded cover picture (a stream with the ``attached_pic`` disposition: ID3 ``APIC``,
  MP4 ``covr``, a FLAC picture block, a Matroska image attachment), in pixels at its own size;
- else its waveform, drawn by ffmpeg's ``showwavespic`` filter from the first audio stream mixed
  down to mono, square-root amplitude scale, in blue on a transparent background (it reads well
  on white and on dark backgrounds). The waveform is a drawing: its page is
  :data:`WAVEFORM_SIZE` points (4:1) and it is drawn directly at the requested size.

Drawing the waveform decodes the whole stream (a few seconds for an hour of MP3 here); the
conversion's timeout bounds it. Video containers without a video stream reach this module
through the video converter. ffmpeg runs pinned to the demuxer of the sniffed type (see
:mod:`previewer.converters.media`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import AUDIO, AUDIO_DEMUXERS
from previewer.converters.media import FFmpeg, Probe, scale_filter
from previewer.errors import InputError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["WAVEFORM_COLOUR", "WAVEFORM_SIZE", "AudioConverter", "AudioDocument"]

WAVEFORM_SIZE = (1024.0, 256.0)
"""The waveform's page size (points: it is drawn at whatever size is asked)."""
WAVEFORM_COLOUR = "0x2f6db5"
"""The waveform's colour (a medium blue)."""


class AudioConverter(BaseConverter):
    """Previews audio files with ffmpeg: the cover picture, else the waveform."""

    name: ClassVar[str] = AUDIO.name
    mime_types: ClassVar[frozenset[str]] = AUDIO.mime_types
    priority: ClassVar[int] = AUDIO.priority
    sandboxed: ClassVar[bool] = True

    def availability(self) -> Availability:
        """Find ``ffmpeg`` and ``ffprobe`` on the PATH."""
        from previewer.converters import media

        return media.availability()

    def open(self, source: Path, ctx: ConvertContext) -> AudioDocument:
        """Probe ``source`` with the demuxer of its sniffed type and return a document.

        Raises:
            InputError: The content is not an audio format this converter reads, or it holds
                neither an audio stream nor a cover picture.
        """
        demuxer = AUDIO_DEMUXERS.get(ctx.mime)
        if demuxer is None:
            raise InputError(
                f"the content is {ctx.mime}, not an audio format ffmpeg may read here "
                "(ffmpeg's demuxer is pinned to the sniffed type)"
            )
        ffmpeg = FFmpeg(source, demuxer, ctx)
        probe = ffmpeg.probe()
        if probe.audio is None and probe.cover is None:
            raise InputError("no decodable audio stream")
        return AudioDocument(ffmpeg, probe)


class AudioDocument(BaseDocument):
    """One page: the cover picture (``px``) or the waveform (``pt``, drawn at any size)."""

    page_count: int = 1

    def __init__(self, ffmpeg: FFmpeg, probe: Probe) -> None:
        self._ffmpeg = ffmpeg
        self._probe = probe
        cover = probe.cover
        self._cover = cover if cover is not None and min(cover.size) > 0 else None
        if self._cover is not None:
            ffmpeg.check_pixels(self._cover.size)
        elif probe.audio is None:
            raise InputError("no decodable audio stream")
        self.units: Literal["pt", "px"] = "px" if self._cover is not None else "pt"
        self._last: tuple[tuple[int, int], Image.Image] | None = None

    def page_size(self, index: int) -> tuple[float, float]:
        """The cover's size in pixels, else the waveform's page in points."""
        if self._cover is not None:
            return self._cover.display_size
        return WAVEFORM_SIZE

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Draw the page at ``scale``; a ``clip`` is cut from the whole picture."""
        from PIL import Image

        width, height = self.page_size(index)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if self._last is None or self._last[0] != size:
            path = self._picture(size)
            with Image.open(path, formats=["PNG"]) as image:
                image.load()
                self._last = (size, image.copy())
            path.unlink()
        whole = self._last[1]
        if clip is None:
            return whole
        x0, y0, x1, y1 = (round(v * scale) for v in clip)
        return whole.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """Return ffmpeg's PNG of the page at exactly ``size`` (None above the tile budget)."""
        if size[0] * size[1] > self._ffmpeg.ctx.limits.max_tile_pixels:
            return None
        path = self._picture(size)
        data = path.read_bytes()
        path.unlink()
        return data

    def _picture(self, size: tuple[int, int]) -> Path:
        if self._cover is not None:
            graph = f"[0:{self._cover.index}]{scale_filter(size)}[out]"
            what = "the cover picture cannot be decoded"
        else:
            audio = self._probe.audio
            assert audio is not None  # checked in __init__
            graph = (
                f"[0:{audio.index}]aformat=channel_layouts=mono,"
                f"showwavespic=s={size[0]}x{size[1]}:split_channels=0:scale=sqrt:draw=full:"
                f"colors={WAVEFORM_COLOUR},format=rgba[out]"
            )
            what = "no decodable audio"
        path, _ = self._ffmpeg.extract(graph, what=what)
        if path is None:
            raise InputError(what)
        return path

    def metadata(self) -> dict[str, Any]:
        """Duration, codec, sample rate, channels, bit rate, cover, title/artist/album."""
        audio = self._probe.audio
        raw = audio.raw if audio is not None else {}
        facts: dict[str, Any] = {
            "kind": "audio",
            "container": self._probe.format.get("format_name"),
            "duration": self._probe.duration,
            "audio_codec": audio.codec if audio is not None else None,
            "sample_rate": int(raw["sample_rate"])
            if str(raw.get("sample_rate", "")).isdigit()
            else None,
            "channels": raw.get("channels"),
            "channel_layout": raw.get("channel_layout"),
            "has_cover": self._cover is not None,
            "preview": "cover" if self._cover is not None else "waveform",
        }
        bit_rate = self._probe.format.get("bit_rate")
        if isinstance(bit_rate, str) and bit_rate.isdigit():
            facts["bit_rate"] = int(bit_rate)
        tags = self._probe.tags
        for key in ("title", "artist", "album", "album_artist", "date", "genre", "track"):
            if key in tags:
                facts[key] = tags[key]
        return facts

    def close(self) -> None:
        """Drop the last drawn picture (every drawing is its own ffmpeg run)."""
        self._last = None

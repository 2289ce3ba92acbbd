"""What the video and audio converters share: finding ffmpeg, running it pinned, probing.

ffmpeg and ffprobe only ever run through :meth:`ConvertContext.run` (no network, a restricted
file view, a timeout and a killed process group), and every run is pinned to the one demuxer the
sniffed MIME type stands for: ``-f X -format_whitelist X -protocol_whitelist file``, the input
named ``file:/absolute/path``. So content can never choose another demuxer: an HLS playlist
(a text file listing ``file:`` or ``http:`` segments) named ``.mp4`` is refused by the ``mov``
demuxer before anything is opened; ffmpeg 5.1 opens such segments even with ``-protocol_whitelist
file`` when the HLS demuxer is allowed to probe it.

:class:`Probe` is ffprobe's view of a file (streams, duration, tags); :class:`FFmpeg` runs one
extraction and translates ffmpeg's failures on bad input into :class:`InputError` with its last
error line, paths removed.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from previewer.errors import EngineError, EngineUnavailableError, InputError, LimitExceededError
from previewer.plugin import Availability, ConvertContext

__all__ = ["FFmpeg", "Probe", "Stream", "availability", "grey_stddev", "reason", "sanitize"]

INSTALL_HINT = "apt-get install ffmpeg"
_PATH = re.compile(r"(?:file:)?(?:/[^\s:'\"]+)+")


@functools.cache
def _tools() -> tuple[str, str] | None:
    import shutil

    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        return None
    return ffmpeg, ffprobe


@functools.cache
def _version() -> str | None:
    """Return ffmpeg's version from Debian's changelog (no process started), or None."""
    import gzip

    try:
        with gzip.open("/usr/share/doc/ffmpeg/changelog.Debian.gz", "rt") as fh:
            first = fh.readline()
    except (OSError, EOFError):
        return None
    match = re.search(r"\((?:\d+:)?([^)\s-]+)", first)
    return match.group(1) if match else None


def availability() -> Availability:
    """Whether ``ffmpeg`` and ``ffprobe`` are on the PATH, with an install hint if not."""
    if _tools() is None:
        return Availability(False, "FFmpeg", reason=f"ffmpeg/ffprobe not found; {INSTALL_HINT}")
    return Availability(True, "FFmpeg", version=_version())


def sanitize(text: str, source: Path) -> str:
    """Return ffmpeg's message ``text`` without file paths (the input becomes its name)."""
    text = text.replace("file:" + str(source), source.name).replace(str(source), source.name)
    text = _PATH.sub("<path>", text)
    return text.strip().removeprefix(source.name + ":").strip()


_GENERIC = re.compile(
    r"Error marking filters as finished|Cannot determine format of input stream|"
    r"Conversion failed|Nothing was written into output|Error while filtering|"
    r"Error reinitializing filters|Failed to inject frame|Invalid data found when processing input$"
)
_COMPONENT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")


def reason(stderr: bytes | str) -> str:
    """Return ffmpeg's most telling error line: the last one that is not a generic consequence.

    ffmpeg ends with "Error marking filters as finished" or "Invalid data found when processing
    input" after the line that says why ("moov atom not found", "partial file").
    """
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [_COMPONENT.sub("", line.strip()) for line in text.splitlines() if line.strip()]
    specific = [line for line in lines if not _GENERIC.search(line)]
    return (specific or lines or [""])[-1]


def grey_stddev(raw: bytes) -> float:
    """Standard deviation (0-255) of 8-bit grey samples; 0.0 for no samples."""
    if not raw:
        return 0.0
    mean = sum(raw) / len(raw)
    return math.sqrt(sum((v - mean) ** 2 for v in raw) / len(raw))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _rate(value: Any) -> float | None:
    """``"30000/1001"`` -> 29.97; None for ``0/0`` or garbage."""
    if not isinstance(value, str) or "/" not in value:
        return _number(value)
    num, _, den = value.partition("/")
    n, d = _number(num), _number(den)
    return n / d if n is not None and d else None


@dataclass(frozen=True)
class Stream:
    """One stream as ffprobe describes it.

    Attributes:
        index: The stream's index in the file (``-map 0:INDEX``).
        kind: ``video``, ``audio``, ``subtitle``, ``attachment``...
        codec: The codec's short name (``h264``), or ``""``.
        raw: ffprobe's whole JSON object for the stream.
    """

    index: int
    kind: str
    codec: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def attached_pic(self) -> bool:
        """True for an embedded cover picture (``attached_pic`` disposition)."""
        return bool((self.raw.get("disposition") or {}).get("attached_pic"))

    @property
    def size(self) -> tuple[int, int]:
        """Coded width and height (0 when unknown)."""
        return int(self.raw.get("width") or 0), int(self.raw.get("height") or 0)

    @property
    def rotation(self) -> int:
        """Display rotation in degrees (display matrix, else the ``rotate`` tag), 0..359."""
        for side in self.raw.get("side_data_list") or []:
            value = _number(side.get("rotation"))
            if value is not None:
                return round(value) % 360
        value = _number((self.raw.get("tags") or {}).get("rotate"))
        return round(value) % 360 if value is not None else 0

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown: sample aspect ratio and rotation applied."""
        width, height = self.size
        sar = _rate(str(self.raw.get("sample_aspect_ratio", "")).replace(":", "/"))
        if sar and sar > 0 and abs(sar - 1) > 1e-3:
            width = max(1, round(width * sar))
        return (height, width) if self.rotation % 180 == 90 else (width, height)

    @property
    def frame_rate(self) -> float | None:
        """Average frame rate, else the nominal one."""
        return _rate(self.raw.get("avg_frame_rate")) or _rate(self.raw.get("r_frame_rate"))


@dataclass(frozen=True)
class Probe:
    """ffprobe's description of a file.

    Attributes:
        format: ffprobe's ``format`` object (container name, duration, tags).
        streams: Every stream, in file order.
    """

    format: dict[str, Any]
    streams: tuple[Stream, ...]

    @property
    def duration(self) -> float | None:
        """Seconds, from the container, else the longest stream; None when unknown."""
        value = _number(self.format.get("duration"))
        if value is None or value <= 0:
            values = [_number(s.raw.get("duration")) for s in self.streams]
            value = max((v for v in values if v is not None), default=None)
        return value if value is not None and value > 0 else None

    @property
    def video(self) -> Stream | None:
        """The first video stream that is not a cover picture."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)

    @property
    def cover(self) -> Stream | None:
        """The first embedded cover picture stream."""
        return next((s for s in self.streams if s.kind == "video" and s.attached_pic), None)

    @property
    def audio(self) -> Stream | None:
        """The first audio stream."""
        return next((s for s in self.streams if s.kind == "audio"), None)

    @property
    def tags(self) -> dict[str, str]:
        """The container's tags, keys in lower case (Vorbis comments are upper case)."""
        tags = self.format.get("tags") or {}
        return {str(k).lower(): str(v) for k, v in tags.items()}


class FFmpeg:
    """ffmpeg and ffprobe for one input, pinned to one demuxer.

    Args:
        source: The input file.
        demuxer: The only demuxer ffmpeg may use for it.
        ctx: The conversion's context (runs, work directory, limits).
    """

    def __init__(self, source: Path, demuxer: str, ctx: ConvertContext) -> None:
        tools = _tools()
        if tools is None:
            raise EngineUnavailableError("ffmpeg/ffprobe not found", hint=INSTALL_HINT)
        self.ffmpeg, self.ffprobe = tools
        self.source = source.resolve()
        self.demuxer = demuxer
        self.ctx = ctx
        self._runs = 0

    def input_args(self) -> list[str]:
        """The pinned input: demuxer, whitelists and the ``file:`` URL (after any ``-ss``)."""
        return [
            "-f",
            self.demuxer,
            "-format_whitelist",
            self.demuxer,
            "-protocol_whitelist",
            "file",
            "-i",
            "file:" + str(self.source),
        ]

    def probe(self) -> Probe:
        """Run ffprobe on the input.

        Raises:
            InputError: ffprobe cannot read the file with the pinned demuxer.
        """
        argv = [self.ffprobe, "-v", "error", "-hide_banner", "-show_format", "-show_streams"]
        argv += ["-of", "json", *self.input_args()]
        result = self._run(argv, "not a readable media file")
        try:
            data = json.loads(result.stdout or b"{}")
        except ValueError as exc:
            raise InputError(f"ffprobe gave no description of the file ({exc})") from exc
        streams = tuple(
            Stream(
                int(s.get("index", i)),
                str(s.get("codec_type", "")),
                str(s.get("codec_name", "")),
                s,
            )
            for i, s in enumerate(data.get("streams") or [])
        )
        return Probe(dict(data.get("format") or {}), streams)

    def check_pixels(self, size: tuple[int, int]) -> None:
        """Refuse a picture larger than ``limits.max_pixels`` before ffmpeg decodes it."""
        pixels = size[0] * size[1]
        if pixels > self.ctx.limits.max_pixels:
            raise LimitExceededError(
                f"a {size[0]}x{size[1]} picture ({pixels:,} pixels) exceeds the budget of "
                f"{self.ctx.limits.max_pixels:,} pixels",
                hint="raise max_pixels",
            )

    def extract(
        self,
        graph: str,
        *,
        seek: float | None = None,
        keyframes: bool = False,
        grey: bool = False,
        what: str = "no decodable picture",
    ) -> tuple[Path | None, bytes]:
        """Run one ffmpeg extraction of a single picture.

        Args:
            graph: A filter graph reading ``[0:N]`` inputs and labelling its result ``[out]``
                (and, with ``grey``, a 16x16 grey copy ``[grey]``).
            seek: Seconds to seek to (input seeking, to the keyframe at or before it).
            keyframes: Decode keyframes only (``-skip_frame nokey``).
            grey: Also write the ``[grey]`` output as raw bytes on stdout.
            what: What a failure means, for the error message.

        Returns:
            The PNG written (None when ffmpeg decoded no picture) and the grey bytes.

        Raises:
            InputError: ffmpeg failed on the input (its last error line, paths removed).
        """
        self._runs += 1
        out = self.ctx.workdir / f"ffmpeg-{self._runs}.png"
        argv = [self.ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-threads", "1"]
        if seek is not None and seek > 0:
            argv += ["-ss", f"{seek:.3f}", "-noaccurate_seek"]
        if keyframes:
            argv += ["-skip_frame", "nokey"]
        argv += [*self.input_args(), "-an", "-sn", "-dn", "-filter_complex", graph]
        argv += ["-map", "[out]", "-frames:v", "1", "-c:v", "png", "-f", "image2", "-update", "1"]
        argv += ["file:" + str(out)]
        if grey:
            argv += ["-map", "[grey]", "-frames:v", "1", "-f", "rawvideo", "pipe:1"]
        result = self._run(argv, what)
        if not (out.is_file() and out.stat().st_size > 0):
            return None, b""
        return out, result.stdout

    def _run(self, argv: list[str], what: str) -> Any:
        try:
            return self.ctx.run(
                argv, cwd=self.ctx.workdir, env=_env(self.ctx.workdir), read=[self.source]
            )
        except EngineError as exc:
            if type(exc) is not EngineError:
                raise  # timeouts, missing isolation
            why = sanitize(reason(exc.message.split(": ", 1)[-1]), self.source)
            raise InputError(f"{what}" + (f" ({why})" if why else "")) from exc


def _env(workdir: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
    }


def scale_filter(size: tuple[int, int]) -> str:
    """Scale to exactly ``size`` and make 8-bit RGB (the PNG ffmpeg writes).

    The timestamps restart at 0: after a fast seek the keyframe lies before the seek point,
    and ffmpeg's output would drop a frame that far behind (``dropping frame ... at ts -5``).
    """
    scale = f"scale={size[0]}:{size[1]}:flags=lanczos+accurate_rnd"
    return f"setpts=PTS-STARTPTS,{scale},format=rgb24"

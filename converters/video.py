"""Video files (MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, ASF/WMV, Ogg, FLV) through ffmpeg.

A video is a document of ``page_count`` frames, in pixels at its display size (sample aspect
ratio and display rotation applied; ffmpeg rotates the frames itself):

- ``N`` frames: :data:`FRAMES` (10), or one per whole second for clips shorter than that (at
  least 1, at most the stream's frame count); frame ``j`` (1-based) is the keyframe at or
  before ``(j - 0.5) / N`` of the duration;
- page 1 is the poster: the embedded cover picture (a stream with the ``attached_pic``
  disposition) when the file has one, else the keyframe near 10 % of the duration, or, when
  that frame is near-uniform (black, one colour: the standard deviation of a 16x16 grey copy
  below :data:`UNIFORM`), the keyframe near 1/3, then 2/3 (as totem does); if all three are
  uniform, the 10 % one;
- the following pages are frames 2 to ``N`` (``N`` pages in all); with a cover, frames 1 to
  ``N`` (``N + 1`` pages).

Every frame is one ffmpeg run: input seeking to the keyframe (``-ss`` before ``-i``,
``-noaccurate_seek``, ``-skip_frame nokey``, one thread), scaled by ffmpeg to the requested
size, written as an RGB PNG (handed on as it is by :meth:`VideoDocument.render_png`). ffmpeg's
``thumbnail`` filter is never used (it buffers frames: 1.35 GB on a 4K clip). ffmpeg runs
pinned to the demuxer of the sniffed type (see :mod:`previewer.converters.media`).

A file of a video container with no video stream (an audio-only MP4, WebM, MKV, WMA...) is
previewed as audio: its cover, else its waveform (:mod:`previewer.converters.audio`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, overload

from previewer.converters import VIDEO, VIDEO_DEMUXERS
from previewer.converters.media import FFmpeg, Probe, Stream, grey_stddev, scale_filter
from previewer.errors import InputError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

    from previewer.converters.audio import AudioDocument

__all__ = ["FRAMES", "UNIFORM", "VideoConverter", "VideoDocument"]

FRAMES = 10
"""Pages of a video of 10 seconds or more (evenly spaced frames)."""
UNIFORM = 6.0
"""A frame whose 16x16 grey copy has a standard deviation below this is near-uniform."""
NO_FRAME = "no decodable video frame"
POSTER_TIMES = (0.1, 1 / 3, 2 / 3)
MPEG_SEQUENCE_HEADER = b"\x00\x00\x01\xb3"
"""How an MPEG-1/2 video elementary stream starts (a program stream starts with a pack header)."""
"""Where the poster frame is looked for, in fractions of the duration, in order."""


class VideoConverter(BaseConverter):
    """Previews video files with ffmpeg: a poster frame, then evenly spaced keyframes."""

    name: ClassVar[str] = VIDEO.name
    mime_types: ClassVar[frozenset[str]] = VIDEO.mime_types
    priority: ClassVar[int] = VIDEO.priority
    sandboxed: ClassVar[bool] = True

    def availability(self) -> Availability:
        """Find ``ffmpeg`` and ``ffprobe`` on the PATH."""
        from previewer.converters import media

        return media.availability()

    def open(self, source: Path, ctx: ConvertContext) -> VideoDocument | AudioDocument:
        """Probe ``source`` with the demuxer of its sniffed type and return a document.

        Raises:
            InputError: The content is not a video container (the pinned demuxer refuses it),
                or it holds no decodable stream.
        """
        demuxer = VIDEO_DEMUXERS.get(ctx.mime)
        if demuxer is None:
            raise InputError(
                f"the content is {ctx.mime}, not a video container ffmpeg may read here "
                "(ffmpeg's demuxer is pinned to the sniffed type)"
            )
        if demuxer == "mpeg" and _head(source).startswith(MPEG_SEQUENCE_HEADER):
            demuxer = "mpegvideo"  # libmagic says video/mpeg for elementary streams too
        ffmpeg = FFmpeg(source, demuxer, ctx)
        probe = ffmpeg.probe()
        video = probe.video
        if video is None or video.size[0] <= 0 or video.size[1] <= 0:
            if probe.audio is None and probe.cover is None:
                raise InputError("no decodable video or audio stream")
            from previewer.converters.audio import AudioDocument

            return AudioDocument(ffmpeg, probe)
        ffmpeg.check_pixels(video.size)
        return VideoDocument(ffmpeg, probe, video)


def _head(source: Path) -> bytes:
    try:
        with open(source, "rb") as fh:
            return fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from exc


def frame_count(probe: Probe, video: Stream) -> int:
    """The number of pages: :data:`FRAMES`, fewer for clips under 10 s or of few frames."""
    duration = probe.duration
    if duration is None:
        return 1
    count = min(FRAMES, max(1, int(duration)))
    frames = video.raw.get("nb_frames")
    if isinstance(frames, str) and frames.isdigit() and int(frames) > 0:
        count = min(count, int(frames))
    return count


class VideoDocument(BaseDocument):
    """A video: page 1 the poster, the others evenly spaced keyframes (module docstring)."""

    units: Literal["pt", "px"] = "px"

    def __init__(self, ffmpeg: FFmpeg, probe: Probe, video: Stream) -> None:
        self._ffmpeg = ffmpeg
        self._probe = probe
        self._video = video
        self._cover = probe.cover
        if self._cover is not None and min(self._cover.size) <= 0:
            self._cover = None
        if self._cover is not None:
            ffmpeg.check_pixels(self._cover.size)
        self._frames = frame_count(probe, video)
        self._first_frame = 1 if self._cover is not None else 0
        self.page_count = self._frames + self._first_frame
        self._poster_at: float | None = None
        self._error: InputError | None = None
        self._last: tuple[tuple[int, tuple[int, int]], Image.Image] | None = None

    def page_size(self, index: int) -> tuple[float, float]:
        """The display size of the frame (the cover's size for page 1 of a file with one)."""
        if index == 0 and self._cover is not None:
            return self._cover.display_size
        return self._video.display_size

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Extract page ``index``'s frame scaled by ffmpeg; a ``clip`` is cut from it."""
        from PIL import Image

        width, height = self.page_size(index)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if self._last is None or self._last[0] != (index, size):
            path = self._frame(index, size)
            with Image.open(path, formats=["PNG"]) as image:
                image.load()
                self._last = ((index, size), image.copy())
            path.unlink()
        whole = self._last[1]
        if clip is None:
            return whole
        x0, y0, x1, y1 = (round(v * scale) for v in clip)
        return whole.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """Return ffmpeg's RGB PNG of page ``index`` at exactly ``size`` (None above the tiles)."""
        if size[0] * size[1] > self._ffmpeg.ctx.limits.max_tile_pixels:
            return None
        path = self._frame(index, size)
        data = path.read_bytes()
        path.unlink()
        return data

    def _frame(self, index: int, size: tuple[int, int]) -> Path:
        if index == 0 and self._cover is not None:
            graph = f"[0:{self._cover.index}]{scale_filter(size)}[out]"
            path, _ = self._ffmpeg.extract(graph, what="the cover picture cannot be decoded")
            if path is None:
                raise InputError("the cover picture cannot be decoded")
            return path
        if index == 0:
            return self._poster(size)
        duration = self._probe.duration or 0.0
        frame = index - self._first_frame  # 0..frames-1
        path = self._grab((frame + 0.5) / self._frames * duration, size)
        # Past the last keyframe ffmpeg can seek to, or damaged there: the first frame.
        return path or self._first(size)

    def _poster(self, size: tuple[int, int]) -> Path:
        """The first non-uniform keyframe near 10 %, 1/3, 2/3 of the duration (cached)."""
        duration = self._probe.duration or 0.0
        if self._poster_at is not None:
            path = self._grab(self._poster_at, size)
            if path is not None:
                return path
        first: tuple[float, Path] | None = None
        for fraction in POSTER_TIMES if duration > 0 else (0.0,):
            at = fraction * duration
            path, grey = self._grab(at, size, measure=True)
            if path is None:
                if self._error is not None:
                    break  # ffmpeg failed on the data, not just past the end: try the start
                continue
            if grey_stddev(grey) >= UNIFORM:
                if first is not None:
                    first[1].unlink()
                self._poster_at = at
                return path
            if first is None:
                first = (at, path)
            else:
                path.unlink()
        if first is None:
            first = (0.0, self._first(size))
        self._poster_at = first[0]
        return first[1]

    def _first(self, size: tuple[int, int]) -> Path:
        """Return the first keyframe, else the first frame, else raise the error.

        The first frame of any kind is for streams whose keyframes are not flagged as such
        (intra-refresh H.264), which decode without error but give no keyframe.
        """
        error = self._error = None
        path = self._grab(0.0, size)
        if path is None and self._error is error:
            path = self._grab(0.0, size, keyframes=False)
        return path or self._failed()

    @overload
    def _grab(self, at: float, size: tuple[int, int], *, keyframes: bool = True) -> Path | None: ...

    @overload
    def _grab(
        self, at: float, size: tuple[int, int], *, measure: Literal[True], keyframes: bool = True
    ) -> tuple[Path | None, bytes]: ...

    def _grab(
        self, at: float, size: tuple[int, int], *, measure: bool = False, keyframes: bool = True
    ) -> Path | None | tuple[Path | None, bytes]:
        """The keyframe at or before ``at`` seconds, scaled to ``size`` (None if none decodes).

        With ``measure``, also a 16x16 grey copy of it (raw bytes) to judge its uniformity.
        ffmpeg's failure is kept for :meth:`_failed`: another time may still decode.
        """
        source = f"[0:{self._video.index}]{scale_filter(size)}"
        graph = (
            f"{source},split=2[out][g];[g]scale=16:16:flags=area,format=gray[grey]"
            if measure
            else f"{source}[out]"
        )
        try:
            path, grey = self._ffmpeg.extract(
                graph, seek=at, keyframes=keyframes, grey=measure, what=NO_FRAME
            )
        except InputError as exc:
            self._error = exc
            path, grey = None, b""
        return (path, grey) if measure else path

    def _failed(self) -> NoReturn:
        """Raise ffmpeg's last failure on a frame, or say that no frame decoded."""
        if self._error is not None:
            raise self._error
        raise InputError(NO_FRAME)

    def metadata(self) -> dict[str, Any]:
        """Duration, container, codecs, dimensions, frame rate, rotation, cover, audio."""
        video, audio = self._video, self._probe.audio
        width, height = video.size
        rate = video.frame_rate
        facts: dict[str, Any] = {
            "kind": "video",
            "container": self._probe.format.get("format_name"),
            "duration": self._probe.duration,
            "video_codec": video.codec,
            "width": width,
            "height": height,
            "display_width": video.display_size[0],
            "display_height": video.display_size[1],
            "frame_rate": round(rate, 3) if rate else None,
            "rotation": video.rotation,
            "has_cover": self._cover is not None,
            "audio_codec": audio.codec if audio is not None else None,
            "poster": "cover" if self._cover is not None else "frame",
        }
        bit_rate = self._probe.format.get("bit_rate")
        if isinstance(bit_rate, str) and bit_rate.isdigit():
            facts["bit_rate"] = int(bit_rate)
        tags = self._probe.tags
        for key in ("title", "artist", "album", "creation_time"):
            if key in tags:
                facts[key] = tags[key]
        return facts

    def close(self) -> None:
        """Drop the last extracted frame (every frame is its own ffmpeg run)."""
        self._last = None

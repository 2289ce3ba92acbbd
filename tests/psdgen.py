"""Generate layered PSD files for the tests and the benchmark (psd-tools writes them)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

_VERSION_INFO = 1057


def layered_psd(path: Path, size: tuple[int, int] = (800, 600), layers: int = 4) -> Path:
    """Write an RGB PSD with a background and ``layers`` overlapping, half-transparent shapes."""
    from psd_tools import PSDImage

    width, height = size
    psd = PSDImage.new("RGB", size, color=(255, 255, 255))
    background = Image.linear_gradient("L").resize(size).convert("RGB")
    psd.create_pixel_layer(background, name="Background")
    colours = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30), (150, 40, 170)]
    for i in range(layers):
        w, h = width // 2, height // 2
        shape = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(shape)
        draw.ellipse((0, 0, w - 1, h - 1), fill=(*colours[i % len(colours)], 200))
        draw.rectangle((w // 4, h // 4, w // 2, h // 2), fill=(0, 0, 0, 255))
        left, top = (i * width) // (layers + 2), (i * height) // (layers + 3)
        psd.create_pixel_layer(shape, name=f"Shape {i + 1}", left=left, top=top)
    psd.save(path)
    return path


def without_composite(src: Path, dst: Path) -> Path:
    """Copy a PSD, marking its merged image as absent (version-info resource, no real data)."""
    data = src.read_bytes()
    pos = 26
    pos += 4 + int.from_bytes(data[pos : pos + 4], "big")  # colour mode data
    length = int.from_bytes(data[pos : pos + 4], "big")
    resources = data[pos + 4 : pos + 4 + length]
    rest = data[pos + 4 + length :]
    body = (1).to_bytes(4, "big") + b"\x00" + b"\x00" * 8 + (1).to_bytes(4, "big")
    body += b"\x00" * (len(body) % 2)
    block = b"8BIM" + _VERSION_INFO.to_bytes(2, "big") + b"\x00\x00"
    block += len(body).to_bytes(4, "big") + body
    resources += block
    dst.write_bytes(data[:pos] + len(resources).to_bytes(4, "big") + resources + rest)
    return dst


def with_corrupt_layer_rect(src: Path, dst: Path) -> Path:
    """Copy a PSD, turning its first layer's rectangle upside down (bottom = -2**31)."""
    data = bytearray(src.read_bytes())
    pos = 26
    pos += 4 + int.from_bytes(data[pos : pos + 4], "big")  # colour mode data
    pos += 4 + int.from_bytes(data[pos : pos + 4], "big")  # image resources
    pos += 4 + 4 + 2  # layer and mask section length, layer info length, layer count
    top, left, bottom, right = (
        int.from_bytes(data[pos + 4 * i : pos + 4 * i + 4], "big") for i in range(4)
    )
    assert 0 <= top < bottom and 0 <= left < right, "not a layer record"
    data[pos + 8 : pos + 12] = (-(2**31)).to_bytes(4, "big", signed=True)
    dst.write_bytes(bytes(data))
    return dst

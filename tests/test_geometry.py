"""Properties of the pure geometry: fitting, sizes, page specs, tile grids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec, band_grid, fit
from previewer.options import PageSpec, parse_sizes

edges = st.integers(min_value=1, max_value=20_000)
page_edges = st.floats(min_value=0.5, max_value=200_000, allow_nan=False, allow_infinity=False)


@st.composite
def sizes(draw: st.DrawFn) -> SizeSpec:
    kind = draw(st.sampled_from(["square", "box", "width", "height"]))
    a, b = draw(edges), draw(edges)
    return {
        "square": SizeSpec(a, a, square=True),
        "box": SizeSpec(a, b),
        "width": SizeSpec(a, None),
        "height": SizeSpec(None, b),
    }[kind]


@given(page_edges, page_edges, sizes())
def test_fit_stays_in_box_and_keeps_aspect(w: float, h: float, size: SizeSpec) -> None:
    out_w, out_h = fit(w, h, size)
    assert out_w >= 1 and out_h >= 1
    if size.width is not None:
        assert out_w <= size.width
    if size.height is not None:
        assert out_h <= size.height
    # One edge is exactly the box's edge (or 1 px when the page is extremely thin).
    assert out_w == size.width or out_h == size.height
    # Aspect within one pixel: the other edge is the rounded scaled edge.
    if out_w == size.width:
        assert abs(out_h - h * out_w / w) <= 1 or out_h == 1
    else:
        assert abs(out_w - w * out_h / h) <= 1 or out_w == 1


@given(page_edges, page_edges, sizes())
def test_fit_without_upscale_never_enlarges(w: float, h: float, size: SizeSpec) -> None:
    out_w, out_h = fit(w, h, size, upscale=False)
    assert out_w <= max(1, round(w)) and out_h <= max(1, round(h))


@pytest.mark.parametrize(
    ("page", "size", "expected"),
    [
        ((612, 792), "256", (198, 256)),
        ((792, 612), "256", (256, 198)),
        ((612, 792), "1024x768", (593, 768)),
        ((612, 792), "300x", (300, 388)),
        ((612, 792), "x400", (309, 400)),
        ((10, 10), "256", (256, 256)),
        ((10000, 1), "256", (256, 1)),
    ],
)
def test_fit_examples(page: tuple[int, int], size: str, expected: tuple[int, int]) -> None:
    assert fit(*page, SizeSpec.parse(size)) == expected


def test_fit_rejects_empty_page() -> None:
    with pytest.raises(ValueError, match="no usable area"):
        fit(0, 100, SizeSpec.parse(256))


@pytest.mark.parametrize(
    ("text", "label"),
    [("256", "256"), (256, "256"), (" 1024X768 ", "1024x768"), ("300x", "300x"), ("x400", "x400")],
)
def test_size_labels_are_normalised(text: str | int, label: str) -> None:
    assert SizeSpec.parse(text).label == label


@pytest.mark.parametrize("text", ["", "x", "0", "abc", "12x34x5", "-5", "256px", "2000000", "0x10"])
def test_invalid_sizes(text: str) -> None:
    with pytest.raises(InvalidOptionsError):
        parse_sizes([text])


@given(sizes())
def test_size_label_round_trips(size: SizeSpec) -> None:
    assert SizeSpec.parse(size.label) == size


def test_parse_sizes_keeps_order_and_drops_duplicates() -> None:
    assert [s.label for s in parse_sizes(["128", 128, "1024x768", "128"])] == ["128", "1024x768"]


@pytest.mark.parametrize(
    ("spec", "count", "pages"),
    [
        ("1", 5, [1]),
        ("2-4", 5, [2, 3, 4]),
        ("1,3,5-7", 10, [1, 3, 5, 6, 7]),
        ("all", 3, [1, 2, 3]),
        ("1-3", 2, [1, 2]),
        ("4-6", 2, []),
        ("3,1,1-2", 3, [1, 2, 3]),
    ],
)
def test_page_specs(spec: str, count: int, pages: list[int]) -> None:
    assert PageSpec.parse(spec).resolve(count) == pages


def test_single_page_beyond_end_names_the_page_count() -> None:
    with pytest.raises(InvalidOptionsError, match="has 2 pages"):
        PageSpec.parse("5").resolve(2)


@pytest.mark.parametrize("spec", ["0", "3-1", "a", "1,,2", "-1", "1-", "", "all,1"])
def test_invalid_page_specs(spec: str) -> None:
    with pytest.raises(InvalidOptionsError):
        PageSpec.parse(spec)


@given(
    st.lists(st.tuples(st.integers(1, 50), st.integers(0, 10)), min_size=1, max_size=5),
    st.integers(1, 60),
)
def test_page_resolution_is_sorted_distinct_and_in_range(
    parts: list[tuple[int, int]], count: int
) -> None:
    text = ",".join(f"{a}-{a + n}" for a, n in parts)
    pages = PageSpec.parse(text).resolve(count)
    assert pages == sorted(set(pages))
    assert all(1 <= p <= count for p in pages)
    wanted = {p for a, n in parts for p in range(a, a + n + 1) if p <= count}
    assert set(pages) == wanted


def test_tiny_budget_still_covers() -> None:
    tiles = [tile for band in band_grid(7, 5, 1) for tile in band]
    assert len(tiles) == 35 and all((x1 - x0) * (y1 - y0) == 1 for x0, y0, x1, y1 in tiles)

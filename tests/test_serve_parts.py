"""The service's parts that need no server: tokens files, URL signing, request options."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from previewer.serve import auth, params, server, signing
from previewer.serve.work import safe_name


def test_tokens_file_lines_and_json(tmp_path: Path) -> None:
    lines = tmp_path / "tokens.txt"
    lines.write_text("# comment\n\nalpha:one\n beta : two:with:colons \n")
    tokens = auth.load_tokens(lines)
    assert len(tokens) == 2
    assert tokens.check("alpha", "one") and tokens.check("beta", "two:with:colons")
    assert not tokens.check("alpha", "two") and not tokens.check("gamma", "one")
    as_json = tmp_path / "tokens.json"
    as_json.write_text('{"alpha": "one"}')
    assert auth.load_tokens(as_json).check("alpha", "one")
    assert auth.load_tokens(as_json).secret_of("alpha") == "one"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("alpha\n", "line 1: expected key:secret"),
        ('{"a": 1}', "non-empty strings"),
        ("", "no credentials"),
    ],
)
def test_bad_tokens_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(auth.TokenError, match=words):
        auth.load_tokens(path)


def test_basic_credentials() -> None:
    assert auth.basic_credentials("Basic YWxwaGE6b25l") == ("alpha", "one")
    assert auth.basic_credentials("Bearer xyz") is None
    assert auth.basic_credentials("Basic !!!") is None
    assert auth.basic_credentials(None) is None


def test_signer_rotation_and_expiry() -> None:
    old = signing.Signer([("old", b"s1")])
    new = signing.Signer([("new", b"s2"), ("old", b"s1")])
    exp = int(time.time()) + 60
    url = old.sign("/v2/files/a/b.png", exp)
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    new.verify("/v2/files/a/b.png", query)  # signed by the old key, verified after rotation
    with pytest.raises(signing.SignatureError, match="does not match"):
        new.verify("/v2/files/a/c.png", query)
    with pytest.raises(signing.SignatureError, match="expired"):
        new.verify("/v2/files/a/b.png", query, now=exp + 1)
    with pytest.raises(signing.SignatureError, match="unknown key"):
        signing.Signer([("new", b"s2")]).verify("/v2/files/a/b.png", query)
    with pytest.raises(ValueError, match="ID:SECRET"):
        signing.parse_key("nosecret")


def test_generated_signing_key_is_kept(tmp_path: Path) -> None:
    first = signing.load_or_create_key(tmp_path / "signing.key")
    assert signing.load_or_create_key(tmp_path / "signing.key") == first
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600


def test_bind_addresses() -> None:
    assert server.parse_bind("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert server.parse_bind("[::1]:9") == ("::1", 9)
    with pytest.raises(ValueError):
        server.parse_bind("8000")
    assert server.is_loopback("127.0.0.2") and server.is_loopback("::1")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("example.org")


def test_request_options() -> None:
    req, errors = params.parse(
        {"url": "https://example.org/a.pdf", "sizes": [300, "1024x768", "x200"], "pages": "all"},
        upload=False,
    )
    assert errors == {}
    assert req.sizes == ["300", "1024x768", "x200"]
    assert req.pages == "all"
    assert "url" not in req.stored()
    _, errors = params.parse({"sizes": list(range(1, 20))}, upload=True)
    assert errors == {"sizes": ["at most 10 sizes"]}
    data, errors = params.from_multi(
        [("sizes", "10,20"), ("json", '{"pages": "2"}'), ("data", '{"a": 1}')]
    )
    assert data == {"sizes": ["10", "20"], "pages": "2", "data": {"a": 1}}
    assert errors == {}


def test_safe_names() -> None:
    assert safe_name("report.pdf") == "report.pdf"
    assert safe_name("..hidden") == "hidden"
    assert safe_name("a b/ç.pdf") == "a_b__.pdf"
    assert safe_name("...") == "input"


@pytest.mark.parametrize("isolate", [True, False])
def test_convert_and_describe_counts_every_page_and_names_bad_input(
    tmp_path: Path, isolate: bool
) -> None:
    """One call writes page 1 of the 2-page sample and describes both pages."""
    from previewer import pipeline
    from previewer.errors import PreviewerError
    from previewer.options import Options
    from previewer.registry import Registry
    from tests.support import PDF

    options = Options.build(sizes=[64], pages="1", out_dir=tmp_path)
    previews, facts = pipeline.convert_and_describe(
        PDF, options, Registry(), keys=("checksum",), isolate=isolate
    )
    assert [(p.page, max(p.width, p.height)) for p in previews] == [(1, 64)]
    assert previews[0].path is not None and previews[0].path.is_file()
    assert facts.pages == 2 and len(facts.page_sizes) == 2
    assert round(facts.page_sizes[0][0]) == 595  # A4 portrait, in points
    assert (
        facts.extracted is not None and facts.extracted["checksum"]["bytes"] == PDF.stat().st_size
    )
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7\nnot really")
    with pytest.raises(PreviewerError) as caught:
        pipeline.convert_and_describe(bad, options, Registry(), isolate=isolate)
    assert "broken.pdf" in str(caught.value)


def test_convert_and_describe_gives_a_jpegs_own_size_not_its_reduced_decode(
    tmp_path: Path,
) -> None:
    """A small preview decodes the JPEG with DCT scaling (1/8): its size is still 1600 x 1200."""
    from previewer import pipeline
    from previewer.options import Options
    from previewer.registry import Registry
    from tests.support import JPEG

    options = Options.build(sizes=[120], out_dir=tmp_path)
    previews, facts = pipeline.convert_and_describe(JPEG, options, Registry(), isolate=False)
    assert [(p.width, p.height) for p in previews] == [(120, 90)]
    assert facts.page_sizes == [(1600.0, 1200.0)]


def test_probe_on_the_threads_warm_worker(tmp_path: Path) -> None:
    """Broker mode probes documents on the job thread's warm worker (``call_pooled``): the
    same facts as in a child; a file that breaks the parser leaves only the cheap facts."""
    import os

    from previewer.errors import EngineError
    from previewer.headers import document_facts
    from previewer.options import Options
    from previewer.queue.cost import probe
    from previewer.registry import Registry
    from previewer.serve.pooled import _local, call_pooled, close_pools
    from tests.support import PDF

    options = Options.build(pages="all")
    try:
        facts = probe(str(PDF), options, Registry(), place=call_pooled)
        assert facts.pages == 2 and round(facts.page_area or 0) == 595 * 842
        assert facts == probe(str(PDF), options, Registry())  # as the default child finds
        worker = _local.pool.workers[0].process.pid
        assert worker != os.getpid()
        bad = tmp_path / "broken.pdf"
        bad.write_bytes(b"%PDF-1.7\nnot really")
        with pytest.raises(EngineError):
            call_pooled(document_facts, (str(bad), "application/pdf", options), options.limits, "x")
        cheap = probe(str(bad), options, Registry(), place=call_pooled)
        assert cheap.pages is None and cheap.size == bad.stat().st_size
        probe(str(PDF), options, Registry(), place=call_pooled)
        assert _local.pool.workers[0].process.pid == worker  # the same warm worker throughout
    finally:
        close_pools()
        _local.__dict__.pop("pool", None)  # closed: a later call in this thread starts anew

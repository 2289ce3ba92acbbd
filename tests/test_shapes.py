"""Each data shape declared once: dict round trips, validation, and limit flags from ``Limits``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from previewer import errors
from previewer.cli import cli
from previewer.cli_limits import flag_name, limit_options, limits_from_params
from previewer.errors import (
    EngineError,
    InputError,
    InvalidOptionsError,
    PreviewerError,
)
from previewer.geometry import MAX_EDGE, SizeSpec
from previewer.options import FLAG, LimitFlag, Limits, Options, PageSpec
from previewer.results import (
    UP_TO_DATE,
    BatchReport,
    FileResult,
    Preview,
    Status,
)
from tests.plugins.faulty import OddInputError

# --------------------------------------------------------------------------- strategies

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
edge = st.integers(1, MAX_EDGE)
sizes = st.one_of(
    edge.map(lambda n: SizeSpec(n, n, square=True)),
    st.tuples(edge, edge).map(lambda wh: SizeSpec(wh[0], wh[1])),
    edge.map(lambda w: SizeSpec(w, None)),
    edge.map(lambda h: SizeSpec(None, h)),
)
page_texts = st.one_of(
    st.just("all"),
    st.lists(
        st.tuples(st.integers(1, 50), st.integers(0, 5), st.booleans()), min_size=1, max_size=4
    ).map(
        lambda parts: ",".join(
            str(a) if single else f"{a}-{a + extra}" for a, extra, single in parts
        )
    ),
)
limits = st.builds(
    Limits,
    max_pixels=st.integers(1, 2**40),
    max_output_pixels=st.integers(1, 2**40),
    max_tile_pixels=st.integers(4096, 2**40),
    max_file_size=st.integers(1, 2**40),
    max_pages=st.integers(1, 10**6),
    timeout=st.floats(0.001, 1e6, allow_nan=False),
    max_memory=st.integers(1, 2**40),
    allow_unisolated=st.booleans(),
)
paths = st.lists(st.sampled_from(["a", "b c", "é", ".."]), min_size=1, max_size=3).map(
    lambda parts: Path("/", *parts)
)
options = st.builds(
    Options,
    sizes=st.lists(sizes, min_size=1, max_size=4).map(tuple),
    pages=page_texts.map(PageSpec.parse),
    out_dir=paths,
    upscale=st.booleans(),
    password=st.none() | text,
    converter=st.none() | text,
    limits=limits,
    keep_temp=st.booleans(),
    out_root=st.none() | paths,
)
error_classes = st.sampled_from(
    [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, PreviewerError)
    ]
    + [OddInputError]
)
error_values = st.builds(
    lambda cls, message, path, converter, hint: cls(
        message, path=path, converter=converter, hint=hint
    ),
    error_classes,
    text,
    st.none() | text,
    st.none() | text,
    st.none() | text,
)


def _json(data: dict[str, Any]) -> dict[str, Any]:
    """Send ``data`` through JSON text, as the queue, the journal and reports do."""
    result: dict[str, Any] = json.loads(json.dumps(data))
    return result


@st.composite
def file_results(draw: st.DrawFn) -> FileResult:
    source = draw(text)
    status = draw(st.sampled_from(Status))
    mime = draw(st.none() | st.just("application/pdf"))
    converter = draw(st.none() | st.just("pdf-pymupdf"))
    outputs = draw(
        st.lists(
            st.builds(
                Preview,
                source=st.just(source),
                page=st.integers(1, 100),
                size=st.sampled_from(["256", "300x", "x20", "10x20"]),
                path=st.none() | paths,
                width=st.integers(1, 5000),
                height=st.integers(1, 5000),
                converter=st.just(converter or ""),
                mime=st.just(mime or ""),
            ),
            max_size=3,
        )
    )
    error = draw(error_values) if status == Status.FAILED else None
    return FileResult(
        input=source,
        status=status,
        mime=mime,
        converter=converter,
        outputs=outputs,
        error=error,
        reason=draw(text) if status == Status.SKIPPED else "",
        duration=draw(st.floats(0, 1e5, allow_nan=False)),
        warnings=draw(st.lists(text, max_size=2)),
    )


def _same_error(a: PreviewerError | None, b: PreviewerError | None) -> bool:
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and a.to_dict() == b.to_dict() and str(a) == str(b)


# --------------------------------------------------------------------------- round trips


@given(limits)
def test_limits_round_trip(value: Limits) -> None:
    assert Limits.from_dict(_json(value.to_dict())) == value


@given(options)
def test_options_round_trip(value: Options) -> None:
    assert Options.from_dict(_json(value.to_dict())) == value


def test_options_from_old_queue_form() -> None:
    """Tasks queued before sizes were written as labels carried [width, height, square]."""
    old = Options().to_dict() | {"sizes": [[128, 128, True], [300, None, False]]}
    assert Options.from_dict(old).sizes == (SizeSpec(128, 128, square=True), SizeSpec(300, None))


@given(error_values)
def test_error_round_trip(error: PreviewerError) -> None:
    again = PreviewerError.from_dict(_json(error.to_dict()))
    assert type(again) is type(error)
    assert again.to_dict() == error.to_dict()
    assert str(again) == str(error) and again.exit_code == error.exit_code


@pytest.mark.parametrize(
    "cls",
    [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, PreviewerError)],
)
def test_every_error_class_comes_back_as_itself(cls: type[PreviewerError]) -> None:
    error = cls("went wrong", path="in.pdf", converter="pdf-pymupdf", hint="try again")
    again = PreviewerError.from_dict(_json(error.to_dict()))
    assert type(again) is cls
    assert (again.message, again.path, again.converter, again.hint) == (
        "went wrong",
        "in.pdf",
        "pdf-pymupdf",
        "try again",
    )
    assert error.summary() == {
        "type": cls.__name__,
        "exit_code": int(cls.exit_code),
        "message": "in.pdf: went wrong [pdf-pymupdf]; try again",
    }


def test_unknown_subclass_comes_back_with_its_name_code_and_ancestry() -> None:
    """A plugin's error class the receiving side has not loaded (a worker's plugin)."""
    data = OddInputError("odd", path="x.odd").to_dict()
    assert data["bases"] == ["OddInputError", "InputError", "PreviewerError"]
    data = _json(data | {"type": "PluginOnlyError", "bases": ["PluginOnlyError", *data["bases"]]})
    data["exit_code"] = 5
    again = PreviewerError.from_dict(data)
    assert type(again).__name__ == "PluginOnlyError"
    # Its nearest known ancestor, by the ancestry list (OddInputError is loaded here).
    assert isinstance(again, OddInputError) and isinstance(again, InputError)
    assert again.exit_code == 5 and str(again) == "x.odd: odd"
    assert type(PreviewerError.from_dict(data)) is type(again)  # one stand-in class, cached
    assert PreviewerError.from_dict(data).to_dict() == data

    foreign = {"type": "Alien", "bases": ["Alien", "Strange", "LimitExceededError"]}
    alien = PreviewerError.from_dict(foreign | {"message": "big", "exit_code": 6})
    assert type(alien).__name__ == "Alien" and isinstance(alien, errors.LimitExceededError)
    assert alien.exit_code == 6
    # No ancestry at all: an engine failure, as the queue has always reported it.
    assert isinstance(PreviewerError.from_dict({"type": "Nameless", "message": "?"}), EngineError)


def test_error_fields_a_subclass_carries_survive() -> None:
    class WithPageError(InputError):
        pass

    error = WithPageError("bad page", path="a.pdf")
    error.page = 3  # type: ignore[attr-defined]
    data = _json(error.to_dict())
    assert data["fields"] == {"page": 3}
    again = PreviewerError.from_dict(data)
    assert type(again) is WithPageError and again.page == 3  # type: ignore[attr-defined]


@given(file_results())
def test_file_result_round_trip(result: FileResult) -> None:
    again = FileResult.from_dict(_json(result.to_dict(detail=True)))
    assert _same_error(again.error, result.error)
    assert dataclasses.replace(again, error=None) == dataclasses.replace(result, error=None)


@given(file_results())
def test_json_line_keeps_its_shape(result: FileResult) -> None:
    """``--json``/``--report`` lines: the error as a summary, previews without their context."""
    line = _json(result.to_dict())
    assert list(line) == [
        "input",
        "status",
        "mime",
        "converter",
        "outputs",
        "error",
        "duration",
        "warnings",
        *(["reason"] if result.reason else []),
    ]
    assert line["error"] == (result.error.summary() if result.error else None)
    assert all(
        list(p) == ["page", "size", "path", "width", "height", "format", "mimetype"]
        for p in line["outputs"]
    )
    again = FileResult.from_dict(line)  # rebuilt from the summary: same class and text
    assert again.outputs == result.outputs and again.status is result.status
    if result.error is not None:
        assert again.error is not None and type(again.error) is type(result.error)
        assert again.error.message == str(result.error)


@given(st.lists(file_results(), max_size=3), st.floats(0, 1e4, allow_nan=False))
def test_batch_report_round_trip(results: list[FileResult], elapsed: float) -> None:
    report = BatchReport(results, elapsed)
    again = BatchReport.from_dict(_json(report.to_dict(detail=True)))
    assert again.elapsed == elapsed and again.exit_code == report.exit_code
    assert [r.to_dict(detail=True) for r in again.results] == [
        r.to_dict(detail=True) for r in results
    ]


def test_preview_round_trip_alone_and_in_context() -> None:
    preview = Preview("in.pdf", 2, "300x", Path("out/in.pdf.p2.300x.png"), 300, 424, "pdf", "a/b")
    assert Preview.from_dict(_json(preview.to_dict(detail=True))) == preview
    short = _json(preview.to_dict())
    assert Preview.from_dict(short, source="in.pdf", converter="pdf", mime="a/b") == preview


def test_status_is_a_string_enum() -> None:
    assert [s.value for s in Status] == ["converted", "skipped", "failed"]
    assert Status.FAILED == "failed" and json.dumps(Status.SKIPPED) == '"skipped"'
    assert FileResult("x", "failed").status is Status.FAILED  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FileResult("x", "done")  # type: ignore[arg-type]
    assert UP_TO_DATE == "up to date"


# --------------------------------------------------------------------------- validation


def test_options_coerces_what_build_accepts() -> None:
    loose = Options(
        sizes="128",  # type: ignore[arg-type]
        pages="all",  # type: ignore[arg-type]
        out_dir="thumbs",  # type: ignore[arg-type]
        limits={"timeout": 5},  # type: ignore[arg-type]
    )
    assert loose == Options.build(
        sizes="128", pages="all", out_dir="thumbs", limits=Limits(timeout=5)
    )
    assert loose.pages.resolve(3) == [1, 2, 3]  # raised AttributeError before
    assert Options(sizes=["256", 256, SizeSpec(256, 256, square=True)]).sizes == (  # type: ignore[list-item]
        SizeSpec(256, 256, square=True),
    )
    assert Options(limits=None).limits == Limits()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pages": [1, 2]}, "pages must be a page specification, not [1, 2]"),
        ({"pages": "first"}, "invalid page specification 'first'"),
        ({"pages": True}, "invalid page specification True"),
        ({"sizes": "huge"}, "invalid size 'huge'"),
        ({"sizes": ()}, "no output size given"),
        ({"sizes": [SizeSpec(3, 4, square=True)]}, "sizes: invalid size"),
        ({"sizes": [1.5]}, "sizes: invalid size 1.5"),
        ({"out_dir": 3}, "out_dir must be a path, not 3"),
        ({"out_root": 3}, "out_root must be a path, not 3"),
        ({"upscale": "yes"}, "upscale must be True or False, not 'yes'"),
        ({"keep_temp": 1}, "keep_temp must be True or False, not 1"),
        ({"password": 1234}, "password must be a string or None, not a password"),
        ({"converter": 3}, "converter must be a string or None, not 3"),
        ({"limits": 3}, "limits must be a Limits, not 3"),
        ({"limits": {"max_pages": 0}}, "max_pages must be at least 1"),
        ({"limits": {"speed": 1}}, "unknown limit 'speed'"),
    ],
)
def test_options_rejects_with_a_message_naming_the_field(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptionsError) as info:
        Options(**kwargs)
    assert message in info.value.message


def test_options_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(InvalidOptionsError, match="unknown option 'colour'"):
        Options.from_dict(Options().to_dict() | {"colour": "red"})
    with pytest.raises(InvalidOptionsError, match="must be a mapping"):
        Options.from_dict([])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_pixels": True}, "max_pixels must be an integer, not True"),
        ({"max_pages": 2.0}, "max_pages must be an integer, not 2.0"),
        ({"max_memory": "2G"}, "max_memory must be an integer, not '2G'"),
        ({"max_file_size": 0}, "max_file_size must be at least 1"),
        ({"max_output_pixels": -1}, "max_output_pixels must be at least 1"),
        ({"max_tile_pixels": 100}, "max_tile_pixels must be at least 4,096"),
        ({"timeout": True}, "timeout must be a number, not True"),
        ({"timeout": "60"}, "timeout must be a number, not '60'"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"timeout": float("nan")}, "timeout must be positive"),
        ({"allow_unisolated": 1}, "allow_unisolated must be True or False, not 1"),
    ],
)
def test_limits_rejects_with_a_message_naming_the_field(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptionsError) as info:
        Limits(**kwargs)
    assert message in info.value.message


def test_limits_timeout_is_a_float() -> None:
    assert Limits(timeout=5).timeout == 5.0 and isinstance(Limits(timeout=5).timeout, float)


# --------------------------------------------------------------------------- limit flags


@pytest.mark.parametrize("command", ["convert", "info"])
def test_every_limits_field_is_a_flag(command: str) -> None:
    cmd = cli.commands[command]
    by_name = {p.name: p for p in cmd.params if isinstance(p, click.Option)}
    for field in dataclasses.fields(Limits):
        spec = field.metadata[FLAG]
        assert isinstance(spec, LimitFlag) and spec.help, field.name
        option = by_name[field.name]
        assert option.opts == [flag_name(field)]
        assert option.envvar == "PREVIEWER_" + field.name.upper()
        assert option.help == spec.help
        assert option.get_default(click.Context(cmd)) == field.default


def test_a_new_limits_field_gets_a_flag_by_itself() -> None:
    """The options are generated from ``dataclasses.fields(Limits)``, so nothing else to add."""

    @click.command()
    @limit_options
    def show(**params: Any) -> None:
        click.echo(json.dumps(limits_from_params(params).to_dict()))

    names = [p.name for p in show.params]
    assert names == [f.name for f in dataclasses.fields(Limits)]
    runner = CliRunner()
    done = runner.invoke(
        show, ["--max-output-pixels", "1000", "--timeout", "2.5", "--allow-unisolated"]
    )
    assert done.exit_code == 0, done.output
    assert Limits.from_dict(json.loads(done.output)) == Limits(
        max_output_pixels=1000, timeout=2.5, allow_unisolated=True
    )
    done = runner.invoke(show, [], env={"PREVIEWER_MAX_MEMORY": "123456"})
    assert json.loads(done.output)["max_memory"] == 123456
    done = runner.invoke(show, ["--max-tile-pixels", "100"])
    assert done.exit_code == 2 and "x>=4096" in done.output
    done = runner.invoke(show, ["--timeout", "0"])
    assert done.exit_code == 2 and "x>0" in done.output


def test_limits_from_params_reports_a_usage_error() -> None:
    with pytest.raises(click.UsageError, match="max_pages must be at least 1"):
        limits_from_params({"max_pages": 0, "unrelated": 1})
    assert limits_from_params({"inputs": ("a",)}) == Limits()

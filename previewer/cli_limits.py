"""The command line's limit options, generated from the fields of :class:`Limits`.

Each ``Limits`` field declares its flag in its metadata (a :class:`~previewer.options.LimitFlag`:
help text and smallest value); the flag name (``--max-pixels``), the environment variable
(``PREVIEWER_MAX_PIXELS``), the default and the click type follow from the field itself. A new
field therefore gets its flag on every command that takes limits, with nothing to add here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from previewer.budgets import FLAG, LimitFlag, Limits
from previewer.errors import InvalidOptionsError

__all__ = ["ENV_PREFIX", "flag_name", "limit_options", "limits_from_params"]

ENV_PREFIX = "PREVIEWER_"
"""Prefix of the environment variable of each limit (``PREVIEWER_MAX_PIXELS``)."""

F = TypeVar("F", bound=Callable[..., Any])


def flag_name(field: dataclasses.Field[Any]) -> str:
    """Return the command-line flag of a :class:`Limits` field (``max_pixels`` → ``--max-pixels``).

    Args:
        field: The field.

    Returns:
        The flag.
    """
    return "--" + field.name.replace("_", "-")


def _option(field: dataclasses.Field[Any]) -> Callable[[F], F]:
    """The click option of one :class:`Limits` field."""
    spec = field.metadata.get(FLAG)
    if not isinstance(spec, LimitFlag):
        spec = LimitFlag(help="")
    envvar = ENV_PREFIX + field.name.upper()
    kind: type[object] = type(field.default)
    if kind is bool:
        return click.option(flag_name(field), is_flag=True, envvar=envvar, help=spec.help)
    param_type: click.FloatRange | click.IntRange
    if kind is float:
        param_type = click.FloatRange(min=spec.minimum, min_open=spec.exclusive)
    else:
        minimum = spec.minimum
        if minimum is not None and spec.exclusive:
            minimum += 1
        param_type = click.IntRange(min=minimum)
    return click.option(
        flag_name(field),
        type=param_type,
        default=field.default,
        show_default=True,
        envvar=envvar,
        help=spec.help,
    )


def limit_options(func: F) -> F:
    """Add one option per :class:`Limits` field to a click command, in field order.

    The command receives each as a keyword argument named like the field; pass them to
    :func:`limits_from_params`.

    Args:
        func: The command function.

    Returns:
        The decorated function.
    """
    for field in reversed(dataclasses.fields(Limits)):
        func = _option(field)(func)
    return func


def limits_from_params(params: Mapping[str, Any]) -> Limits:
    """Build :class:`Limits` from a command's parameters (the ones :func:`limit_options` adds).

    Args:
        params: The command's keyword arguments; keys that are not limits are ignored.

    Returns:
        The limits.

    Raises:
        click.UsageError: If a value is invalid (the message names the field).
    """
    names = [field.name for field in dataclasses.fields(Limits)]
    try:
        return Limits(**{name: params[name] for name in names if name in params})
    except InvalidOptionsError as exc:
        raise click.UsageError(exc.message) from exc

"""The converter registry: built-ins plus entry-point plugins, loaded lazily, per instance.

A :class:`Registry` loads the built-in converters (:mod:`previewer.converters`) and the
classes registered under the entry-point group ``previewer.converters`` the first time it is
asked for anything. Built-ins are declared statically (name, MIME types, priority), so each
one's module is imported only when its converter is first used: a one-off preview imports one
converter module, not all of them. Entry points are read with :mod:`importlib.metadata` only
when an installed distribution declares the group (a byte search of the ``entry_points.txt``
files on ``sys.path`` tells, in about a millisecond; importing :mod:`importlib.metadata` costs
about 20 ms, a tenth of a one-off conversion): with no plugin installed nothing is paid, and
with one every plugin is loaded, so a plugin with a higher priority than a built-in for the same
type wins whatever the type. A plugin that fails to import or instantiate is listed as
unavailable with the error as its reason; it never breaks a run. A plugin that does not
subclass :class:`~previewer.plugin.BaseConverter` gets the contract's defaults for the optional
members it does not declare, and its documents too (:mod:`previewer.conform`). There is no
module-level registry: tests and embedders build isolated ones with
``Registry(converters=[...], entry_points=False)``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from previewer.conform import conform_converter
from previewer.errors import (
    EngineUnavailableError,
    InvalidOptionsError,
    UnsupportedFormatError,
)
from previewer.plugin import ENTRY_POINT_GROUP, Availability, Converter

__all__ = ["ConverterEntry", "Registry"]

log = logging.getLogger(__name__)


class ConverterEntry:
    """One converter as the registry knows it.

    Attributes:
        name: The converter's name (for a plugin that failed to load: the entry point's name).
        mime_types: MIME types it declares.
        priority: Its priority.
        origin: ``"builtin"`` or ``"entry point <name> (<distribution>)"``.
        converter: The instance, or None when loading failed. A built-in is imported and
            instantiated on first access.
        load_error: Why loading failed.
    """

    __slots__ = ("_converter", "_load_error", "_loader", "mime_types", "name", "origin", "priority")

    def __init__(
        self,
        name: str,
        mime_types: frozenset[str],
        priority: int,
        origin: str,
        converter: Converter | None,
        load_error: str = "",
        *,
        loader: Callable[[], ConverterEntry] | None = None,
    ) -> None:
        self.name = name
        self.mime_types = mime_types
        self.priority = priority
        self.origin = origin
        self._converter = converter
        self._load_error = load_error
        self._loader = loader

    @property
    def converter(self) -> Converter | None:
        """The converter instance (loaded on first access), or None when loading failed."""
        loader = self._loader
        if loader is not None:
            # Cleared only once loaded, so a concurrent first access never sees a half state
            # (at worst two threads each instantiate it once).
            loaded = loader()
            self._converter, self._load_error = loaded.converter, loaded.load_error
            self._loader = None
        return self._converter

    @property
    def load_error(self) -> str:
        """Why loading failed (empty when it did not)."""
        _ = self.converter
        return self._load_error

    def __repr__(self) -> str:
        state = "not loaded" if self._loader is not None else repr(self._converter)
        return f"ConverterEntry({self.name!r}, priority={self.priority}, {self.origin}, {state})"

    def availability(self) -> Availability:
        """Return the converter's availability; a load failure is an unavailable engine.

        Returns:
            The availability, never raising.
        """
        if self.converter is None:
            return Availability(False, engine="?", reason=self.load_error)
        try:
            return self.converter.availability()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not break the run
            return Availability(False, engine="?", reason=f"availability() raised {exc!r}")

    def handles(self, mime: str) -> int:
        """Return 2 for an exact match, 1 for a ``type/*`` match, 0 otherwise.

        Args:
            mime: A MIME type.

        Returns:
            The strength of the match.
        """
        if mime in self.mime_types:
            return 2
        major = mime.split("/", 1)[0]
        return 1 if f"{major}/*" in self.mime_types else 0


class Registry:
    """The set of converters one run can use.

    Args:
        converters: Converter classes or instances to use (instead of the built-ins, unless
            ``builtins`` is true).
        builtins: Also use the built-in converters (default: only when ``converters`` is
            None).
        entry_points: Also load third-party converters from the entry-point group.
    """

    def __init__(
        self,
        converters: Iterable[type[Converter] | Converter] | None = None,
        *,
        builtins: bool | None = None,
        entry_points: bool = True,
    ) -> None:
        self._given = list(converters) if converters is not None else []
        self._builtins = converters is None if builtins is None else builtins
        self._use_entry_points = entry_points
        self._entries: list[ConverterEntry] | None = None
        self._availability: dict[str, Availability] = {}

    def __reduce__(self) -> tuple[object, ...]:
        # A registry crosses into batch workers as its recipe; each process loads its own.
        return (_rebuild_registry, (self._given, self._builtins, self._use_entry_points))

    @property
    def entries(self) -> Sequence[ConverterEntry]:
        """All converters, loaded on first access, sorted by name."""
        if self._entries is None:
            self._entries = self._load()
        return self._entries

    def _load(self) -> list[ConverterEntry]:
        entries: list[ConverterEntry] = []
        if self._builtins:
            from previewer.converters import BUILTIN_SPECS

            for spec in BUILTIN_SPECS:
                entries.append(
                    ConverterEntry(
                        spec.name,
                        spec.mime_types,
                        spec.priority,
                        "builtin",
                        None,
                        loader=functools.partial(_load_builtin, spec.target),
                    )
                )
        for item in self._given:
            entries.append(_entry(item, "given"))
        if self._use_entry_points and _declared(ENTRY_POINT_GROUP):
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                origin = f"entry point {ep.name} ({ep.dist.name if ep.dist else '?'})"
                try:
                    loaded = ep.load()
                except Exception as exc:  # noqa: BLE001 - tolerant loading
                    log.warning("converter plugin %s failed to load: %r", ep.value, exc)
                    entries.append(
                        ConverterEntry(
                            ep.name, frozenset(), 0, origin, None, f"failed to load: {exc!r}"
                        )
                    )
                    continue
                entries.append(_entry(loaded, origin))
        seen: dict[str, ConverterEntry] = {}
        for entry in entries:
            if entry.name in seen:
                log.warning(
                    "converter name %s from %s already used by %s; ignored",
                    entry.name,
                    entry.origin,
                    seen[entry.name].origin,
                )
                continue
            seen[entry.name] = entry
        return sorted(seen.values(), key=lambda e: e.name)

    def availability(self, entry: ConverterEntry) -> Availability:
        """Return (and cache) the availability of ``entry``.

        Args:
            entry: One of :attr:`entries`.

        Returns:
            Its availability.
        """
        if entry.name not in self._availability:
            self._availability[entry.name] = entry.availability()
        return self._availability[entry.name]

    def get(self, name: str) -> ConverterEntry:
        """Return the converter called ``name``.

        Args:
            name: A converter name.

        Returns:
            The entry.

        Raises:
            InvalidOptionsError: If no converter has that name.
        """
        for entry in self.entries:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.entries)
        raise InvalidOptionsError(f"no converter named {name!r} (known: {known})")

    def resolve(self, mime: str, *, name: str | None = None) -> Converter:
        """Return the converter to use for ``mime``.

        Exact MIME matches beat ``type/*`` ones; among available candidates the highest
        priority wins, then the name.

        Args:
            mime: The sniffed MIME type.
            name: Force this converter regardless of the MIME type.

        Returns:
            An available converter.

        Raises:
            UnsupportedFormatError: If no converter claims ``mime``.
            EngineUnavailableError: If only unavailable converters claim it (or the forced one
                is unavailable).
            InvalidOptionsError: If ``name`` names no converter.
        """
        if name is not None:
            entry = self.get(name)
            avail = self.availability(entry)
            if not avail.ok or entry.converter is None:
                raise EngineUnavailableError(
                    f"converter {entry.name} is unavailable: {avail.reason}", converter=entry.name
                )
            return entry.converter
        candidates = [(e.handles(mime), e) for e in self.entries]
        candidates = [(strength, e) for strength, e in candidates if strength]
        if not candidates:
            raise UnsupportedFormatError(
                f"unsupported format {mime}",
                hint="run 'previewer converters' to see the supported types",
            )
        candidates.sort(key=lambda c: (-c[0], -c[1].priority, c[1].name))
        unavailable: list[tuple[ConverterEntry, Availability]] = []
        for _strength, entry in candidates:
            avail = self.availability(entry)
            if avail.ok and entry.converter is not None:
                return entry.converter
            unavailable.append((entry, avail))
        reasons = "; ".join(f"{e.name} ({a.engine}): {a.reason}" for e, a in unavailable)
        raise EngineUnavailableError(f"no available converter for {mime}: {reasons}")


def _rebuild_registry(given: list[Any], builtins: bool, entry_points: bool) -> Registry:
    return Registry(given, builtins=builtins, entry_points=entry_points)


def _declared(group: str) -> bool:
    """Tell whether a distribution on ``sys.path`` may declare entry points in ``group``.

    Not a parser: a byte search for the ``[group]`` section header in each
    ``*.dist-info/entry_points.txt`` (and ``*.egg-info``), so that the common case (no plugin
    installed) does not import :mod:`importlib.metadata` (about 20 ms: email, zipfile, csv and
    socket), which then reads the entry points when this says there may be some. A path entry
    that is not a directory (a zip) may hold anything: True.
    """
    needle = f"[{group}]".encode()
    for base in sys.path:
        base = base or "."
        try:
            names = os.listdir(base)
        except NotADirectoryError:
            return True
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(base, name, "entry_points.txt"), "rb") as fh:
                        if needle in fh.read():
                            return True
                except OSError:
                    continue
    return False


def _load_builtin(target: str) -> ConverterEntry:
    """Import a built-in converter class (``module:class``) and describe its instance."""
    import pkgutil

    try:
        item = pkgutil.resolve_name(target)
    except Exception as exc:  # noqa: BLE001 - tolerant loading
        log.warning("converter %s failed to load: %r", target, exc)
        return ConverterEntry(target, frozenset(), 0, "builtin", None, f"failed to load: {exc!r}")
    return _entry(item, "builtin")


def _entry(item: object, origin: str) -> ConverterEntry:
    """Instantiate a converter class (or take an instance) and describe it.

    A built-in is used as it is; any other converter is given the contract's defaults for the
    optional members it does not declare (:func:`previewer.conform.conform_converter`).
    """
    label = getattr(item, "__qualname__", None) or type(item).__qualname__
    try:
        instance: Any = item() if isinstance(item, type) else item
        converter: Converter = instance if origin == "builtin" else conform_converter(instance)
    except Exception as exc:  # noqa: BLE001 - tolerant loading
        log.warning("converter %s could not be instantiated: %r", label, exc)
        return ConverterEntry(str(label), frozenset(), 0, origin, None, f"failed to load: {exc!r}")
    return ConverterEntry(
        converter.name, converter.mime_types, converter.priority, origin, converter
    )

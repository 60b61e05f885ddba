"""Python hooks, the escape hatch for what declarative filters and transformers cannot say.

A channel file names a hook as ``package.module:function``. ``HookLoader`` imports each one
once, when the channel is deployed, so a typo fails the deploy with a ``HookError`` instead
of every message at run time. A hook module whose file changed since this process
imported it is imported afresh (into a new module object, so channels still running the
old code keep it intact, and a broken edit fails the deploy and leaves the old module in
place). Only the named module: a helper module it imports is not re-read until a restart.
``HookLoader.used`` says which files' contents a channel's hooks came from, so a reload
redeploys a channel whose hook changed.

At run time a failing step must not leak message content into logs: ``run_step`` turns any
exception into ``StepFailed``, whose text names only the step and the exception type. The
full traceback (which may quote values) is kept on ``.traceback`` for the message's stored
record, and the original exception is not chained, so ``log.exception`` prints no content.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback as tb
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

T = TypeVar("T")
R = TypeVar("R")

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_SPEC = re.compile(rf"(?P<module>{_DOTTED}):(?P<attr>{_DOTTED})")


class HookError(Exception):
    """A hook cannot be loaded; raised at deploy time, the text says which hook and why."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(spec, reason)
        self.spec = spec
        self.reason = reason

    def __str__(self) -> str:
        return f"hook {self.spec!r}: {self.reason}"


class StepFailed(Exception):
    """A filter or transformer step raised at run time.

    ``str()`` names the step id and the exception type, nothing else; ``traceback`` holds
    the full text for the message's stored record and must never be logged.
    """

    def __init__(self, step_id: str, kind: str, traceback: str) -> None:
        super().__init__(step_id, kind, traceback)
        self.step_id = step_id
        self.kind = kind
        self.traceback = traceback

    def __str__(self) -> str:
        return f"step {self.step_id} failed: {self.kind}"

    def __repr__(self) -> str:
        return f"StepFailed({self.step_id!r}, {self.kind!r})"

    @classmethod
    def from_exception(cls, step_id: str, exc: BaseException) -> StepFailed:
        """Record ``exc`` (type and formatted traceback) for the step ``step_id``."""
        return cls(step_id, type(exc).__name__, "".join(tb.format_exception(exc)))


def run_step(step_id: str, function: Callable[[T], R], argument: T) -> R:
    """Call one step; any exception becomes StepFailed, without the original chained."""
    try:
        return function(argument)
    except StepFailed:
        raise
    except Exception as exc:
        failed = StepFailed.from_exception(step_id, exc)
    raise failed


def check_spec(spec: str) -> str:
    """Validate the ``module:function`` form; used as a pydantic validator in channel files."""
    if not _SPEC.fullmatch(spec):
        raise PydanticCustomError(
            "hook_spec",
            "a hook is written 'package.module:function' (dotted module, a colon, a name), "
            "e.g. 'site_hooks.pcd:is_monitor'",
        )
    return spec


HookSpec = Annotated[str, AfterValidator(check_spec)]
"""A ``module:function`` string in a channel file, checked for form when the file loads."""


class HookLoader:
    """Imports hooks once and hands out the same callable for every use of a spec."""

    def __init__(self, _loaded: dict[str, tuple[Callable[..., Any], str]] | None = None
                 ) -> None:
        self._loaded = {} if _loaded is None else _loaded
        self.used: dict[str, str] = {}
        """Spec → SHA-256 of its module's file ("" without one), for specs handed out."""

    def scoped(self) -> HookLoader:
        """A loader sharing this one's imports, with its own `used` (one channel's)."""
        return HookLoader(self._loaded)

    def load(self, spec: str) -> Callable[..., Any]:
        """The callable ``spec`` names; raises HookError if it cannot take one argument."""
        found = self._loaded.get(spec)
        if found is None:
            found = self._loaded[spec] = _load(spec)
        self.used[spec] = found[1]
        return found[0]

    def problems(self, specs: Iterable[str]) -> list[HookError]:
        """Every hook in ``specs`` that cannot be loaded, so a deploy reports all at once."""
        errors = []
        for spec in specs:
            try:
                self.load(spec)
            except HookError as error:
                errors.append(error)
        return errors


_imported: dict[str, str] = {}
"""Module name → SHA-256 of its file when this process last imported it for a hook."""


def _file_digest(module: Any) -> str:
    path = getattr(module, "__file__", None)
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""
    except OSError:  # removed since: the loaded module is all there is
        return ""


def _import_current(module_name: str) -> Any:
    """The module as its file reads now: imported afresh if the file changed."""
    module = importlib.import_module(module_name)
    digest = _file_digest(module)
    known = _imported.setdefault(module_name, digest)
    if digest and digest != known:
        with suppress(OSError, NotImplementedError, ValueError):
            # Bytecode is checked by mtime in whole seconds and size: an edit within
            # the second of the last import, same size, would otherwise run the old code.
            os.unlink(importlib.util.cache_from_source(module.__file__))
        sys.modules.pop(module_name)
        try:
            module = importlib.import_module(module_name)
        except BaseException:
            sys.modules[module_name] = module
            raise
        _imported[module_name] = digest
    return module


def _load(spec: str) -> tuple[Callable[..., Any], str]:
    match = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise HookError(str(spec), "expected 'package.module:function'")
    module_name, attribute = match["module"], match["attr"]
    try:
        target: Any = _import_current(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise HookError(spec, f"module {missing!r} not found") from None
        raise HookError(
            spec, f"importing {module_name!r} failed: module {missing!r} not found"
        ) from None
    except Exception as exc:
        raise HookError(
            spec, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise HookError(spec, f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise HookError(spec, f"{attribute!r} is a {type(target).__name__}, not a function")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature; trust them
        return target, _imported[module_name]
    try:
        signature.bind(None)
    except TypeError:
        raise HookError(spec, "a hook must accept exactly one argument (the message)") from None
    return target, _imported[module_name]

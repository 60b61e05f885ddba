"""HookLoader errors at deploy time, and StepFailed keeping content out of its text."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from channels import hooks
from channels.hooks import HookError, HookLoader, HookSpec, StepFailed, run_step
from profiles.hl7.message import Message

SAMPLES = "tests.channels.hook_samples"
PLAIN = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||123||Doe^Jo||19700101|F\r"


def test_load_returns_the_function_once() -> None:
    """A spec loads its function; the same object is returned on every later load."""
    loader = HookLoader()
    first = loader.load(f"{SAMPLES}:is_female")
    assert first(Message.parse(PLAIN)) is True
    assert loader.load(f"{SAMPLES}:is_female") is first


def test_dotted_attribute() -> None:
    """module:Class.attribute reaches a hook one level down."""
    hook = HookLoader().load(f"{SAMPLES}:Namespace.is_male")
    assert hook(Message.parse(PLAIN)) is False


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("no_such_package.hooks:f", "module 'no_such_package' not found"),
        (f"{SAMPLES}_missing:f", f"module '{SAMPLES}_missing' not found"),
        (f"{SAMPLES}:nothing_here", "has no attribute 'nothing_here'"),
        (f"{SAMPLES}:Namespace.nope", "has no attribute 'Namespace.nope'"),
        (f"{SAMPLES}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a function"),
        (f"{SAMPLES}:two_arguments", "must accept exactly one argument"),
        ("no colon here", "expected 'package.module:function'"),
        ("mod:", "expected 'package.module:function'"),
    ],
)
def test_load_errors_say_which_hook_and_why(spec: str, reason: str) -> None:
    """Each way a spec can be wrong gives a HookError naming the spec and the reason."""
    with pytest.raises(HookError) as caught:
        HookLoader().load(spec)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"hook {spec!r}: ")
    assert caught.value.spec == spec


def test_import_failure_inside_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that fails while importing is reported as such, not as missing."""
    (tmp_path / "broken_hooks.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "raising_hooks.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HookError, match="importing 'broken_hooks' failed: module "):
        HookLoader().load("broken_hooks:f")
    with pytest.raises(HookError, match="importing 'raising_hooks' failed: RuntimeError: boom"):
        HookLoader().load("raising_hooks:f")


def test_problems_collects_every_failure() -> None:
    """problems() reports all unloadable hooks at once, in order."""
    errors = HookLoader().problems(
        [f"{SAMPLES}:is_female", "nope.nope:f", f"{SAMPLES}:NOT_CALLABLE"]
    )
    assert [e.spec for e in errors] == ["nope.nope:f", f"{SAMPLES}:NOT_CALLABLE"]


def test_hook_spec_validates_the_form() -> None:
    """The pydantic HookSpec type refuses a malformed spec with an example of the form."""
    adapter = TypeAdapter(HookSpec)
    assert adapter.validate_python("a.b:c") == "a.b:c"
    with pytest.raises(ValidationError, match=r"package\.module:function"):
        adapter.validate_python("a.b.c")


def test_step_failed_keeps_content_out_of_its_text(caplog: pytest.LogCaptureFixture) -> None:
    """A failing hook becomes StepFailed naming step and type; content only in .traceback."""
    hook = HookLoader().load(f"{SAMPLES}:leaky_failure")
    with pytest.raises(StepFailed) as caught:
        run_step("my-step", hook, Message.parse(PLAIN))
    failed = caught.value
    assert str(failed) == "step my-step failed: ValueError"
    assert (failed.step_id, failed.kind) == ("my-step", "ValueError")
    assert "patient Doe" in failed.traceback
    assert "leaky_failure" in failed.traceback
    assert failed.__cause__ is None
    assert failed.__suppress_context__ or failed.__context__ is None
    with caplog.at_level(logging.ERROR):
        logging.getLogger("test").exception("step failed", exc_info=failed)
    assert "Doe" not in caplog.text
    assert "Doe" not in repr(failed)
    assert "my-step" in caplog.text


def test_run_step_passes_results_and_step_failed_through() -> None:
    """run_step returns the result, and re-raises an inner StepFailed unchanged."""
    assert run_step("s", lambda x: x + 1, 1) == 2
    inner = StepFailed("inner", "KeyError", "tb")

    def nested(_: object) -> None:
        raise inner

    with pytest.raises(StepFailed) as caught:
        run_step("outer", nested, None)
    assert caught.value is inner


def test_step_failed_round_trips_through_its_args() -> None:
    """StepFailed keeps its fields in args, so it can be copied or pickled."""
    failed = StepFailed("a", "B", textwrap.dedent("tb"))
    assert StepFailed(*failed.args).traceback == "tb"


@pytest.fixture
def hook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`edited_hooks.py` on the path, forgotten by the interpreter after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(hooks, "_imported", {})
    yield tmp_path / "edited_hooks.py"
    sys.modules.pop("edited_hooks", None)


def test_a_changed_hook_module_is_imported_afresh(hook_module: Path) -> None:
    """An edited module is read again by the next loader; what the old one handed out keeps
    the old code; a broken edit fails the load and leaves the last good module in place."""
    module = hook_module
    module.write_text("def tag(message):\n    return 'v1'\n")
    first = HookLoader()
    old = first.load("edited_hooks:tag")
    assert HookLoader().load("edited_hooks:tag") is old  # unchanged: the same function
    module.write_text("def tag(message):\n    return 'v2'\n")  # same size, same second
    second = HookLoader()
    new = second.load("edited_hooks:tag")
    assert (old(None), new(None)) == ("v1", "v2")
    assert first.used["edited_hooks:tag"] != second.used["edited_hooks:tag"]
    module.write_text("def tag(message):\n    return 'v3'\nundefined_name\n")
    with pytest.raises(HookError, match="importing 'edited_hooks' failed: NameError"):
        HookLoader().load("edited_hooks:tag")
    import edited_hooks  # type: ignore[import-not-found]
    assert edited_hooks.tag(None) == "v2"  # not the half-run v3 that defined tag, then failed
    module.write_text("def tag(message):\n    return 'v4'\n")
    assert HookLoader().load("edited_hooks:tag")(None) == "v4"


def test_a_scoped_loader_shares_imports_and_records_its_own_use() -> None:
    """Channels of one catalog share imports; each records only the hooks it used."""
    catalog = HookLoader()
    a, b = catalog.scoped(), catalog.scoped()
    assert a.load(f"{SAMPLES}:is_female") is b.load(f"{SAMPLES}:is_female")
    b.load(f"{SAMPLES}:Namespace.is_male")
    assert list(a.used) == [f"{SAMPLES}:is_female"]
    assert sorted(b.used) == [f"{SAMPLES}:Namespace.is_male", f"{SAMPLES}:is_female"]
    assert len(set(b.used.values())) == 1 and len(a.used[f"{SAMPLES}:is_female"]) == 64

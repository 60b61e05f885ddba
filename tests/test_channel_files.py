"""The `tests:` written in the shipped channel files, one pytest test per channel test.

A channel's example messages are part of the suite: a change to a transform, a table or the
pipeline that breaks what an analyst wrote down fails here with the same readable diff
`interlink test` prints.
"""

from __future__ import annotations

import pytest

from channels.testing import Case, collect, format_result, run_case
from tests.support import REPO

CHANNELS = REPO / "conf" / "channels"


FOUND = collect([CHANNELS])
CASES = FOUND.cases
ISSUES = [str(issue) for issue in FOUND.issues]


def case_id(case: Case) -> str:
    """`conf/channels/x.yaml::test name`."""
    return f"{case.channel.file.relative_to(REPO)}::{case.test.name}"


def test_every_channel_file_loads() -> None:
    """A channel file that does not load has no tests to run; that is a failure too."""
    assert not ISSUES, "\n".join(ISSUES)


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_channel(case: Case) -> None:
    """One test of one channel file."""
    result = run_case(case)
    if not result.passed:
        pytest.fail(format_result(result), pytrace=False)

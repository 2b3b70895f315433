"""The quick loop (``pytest -m "not slow"``) stays quick: a test that starts processes
or moto through the shared fixtures must be marked slow (checked in conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import SLOW_FIXTURES, unmarked_slow_fixtures
from tests.fleet_helpers import make_fleet_fixture as make_fleet_fixture
from tests.fleet_helpers import watches_fixture as watches_fixture
from tests.helpers import daemons_fixture as daemons_fixture


def test_a_slow_fixture_without_the_mark_is_named() -> None:
    used = ["tmp_path", "daemons", "hooks_dir", "aws_env"]
    assert unmarked_slow_fixtures(used, marked_slow=False) == ["aws_env", "daemons"]


def test_marked_or_quick_tests_pass() -> None:
    assert unmarked_slow_fixtures(["daemons"], marked_slow=True) == []
    assert unmarked_slow_fixtures(["tmp_path", "hooks_dir", "sim"], marked_slow=False) == []


@pytest.mark.parametrize("name", sorted(SLOW_FIXTURES))
def test_every_slow_fixture_exists(name: str, request: pytest.FixtureRequest) -> None:
    """A renamed fixture must not silently leave the check (looked up, not started)."""
    assert request._fixturemanager.getfixturedefs(name, request.node), name

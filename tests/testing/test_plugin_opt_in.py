"""The testing kit's pytest fixtures are opt-in: installing the provider loads nothing into a user's
pytest run, and one ``-p`` (or a ``pytest_plugins`` line) brings them in."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each test starts pytest in a subprocess (~1.5 s)


def _fixtures(tmp_path, *options: str) -> str:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", *options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_an_installed_provider_adds_no_fixture_to_a_users_pytest_run(tmp_path):
    assert "o3_standin" not in _fixtures(tmp_path)


def test_one_option_enables_the_stand_in_fixtures(tmp_path):
    listed = _fixtures(tmp_path, "-p", "airflow_o3.testing.pytest_plugin")
    assert re.search(r"^o3_standin\b(?!_)", listed, re.MULTILINE), listed
    assert re.search(r"^o3_standin_connection\b", listed, re.MULTILINE), listed

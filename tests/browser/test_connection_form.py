"""The ``aimlapi`` connection form in a real browser, against a real Airflow 3 API server.

Starts ``airflow api-server`` (SQLite, 127.0.0.1, a free port, its own temp ``AIRFLOW_HOME``, the
SimpleAuthManager with every user an admin, so no login), opens *Admin -> Connections -> Add
Connection* in headless Chromium, picks **AI/ML API (o3-mini)** and checks what Airflow 3.2+ draws
from the provider info (``ui-field-behaviour`` and ``conn-fields``): relabelled standard fields with
their placeholders, hidden ones gone, every custom field with its label, description and default.
Then it fills the form in, saves, and reads the connection back through the REST API.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser-deps``, run by ``.ci/run``).
Without them the test is skipped, unless ``AIRFLOW_O3_REQUIRE_BROWSER=1`` (CI) makes that a failure.
Screenshots go to ``out/browser/``; ``AIRFLOW_O3_UPDATE_DOCS_SCREENSHOTS=1`` (``make screenshots``)
also refreshes ``docs/connection-form*.png``.

Run it alone with ``pytest -m browser``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_o3.get_provider_info import CONNECTION_TYPE
from tests.dagrun import AIRFLOW_3

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AIRFLOW_O3_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AIRFLOW_O3_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CONN_ID = "aimlapi_from_the_ui"
API_KEY = "sk-typed-in-the-browser-7f3e"
BASE_URL = "http://127.0.0.1:8765/v1"
TYPED_EXTRAS = {"model": "o3-mini-2025-01-31", "read_timeout": "900", "max_attempts": "3"}


def _missing_browser() -> str | None:
    if not AIRFLOW_3:
        return "the React connection form exists only in Airflow 3's UI (Airflow 2 draws a FAB form)"
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        reason = (
            f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(make browser-deps)"
        )
        if os.environ.get("AIRFLOW_O3_REQUIRE_BROWSER") == "1":
            pytest.fail(f"AIRFLOW_O3_REQUIRE_BROWSER=1 but {reason}")
        return reason
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class ApiServer:
    url: str
    env: dict[str, str]

    def airflow(self, *args: str) -> str:
        """Run an ``airflow`` CLI command against this server's home; its stdout."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    """A running ``airflow api-server`` with its own SQLite home."""
    if reason := _missing_browser():
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="airflow-o3-ui-"))
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    migrate = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    log_path = home / "api-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its workers stop with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get_json(f"{base}/api/v2/monitor/health")["metadatabase"]["status"] == "healthy":
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API server did not come up:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield ApiServer(base, env)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="airflow-o3-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    # The driver path is given, so selenium-manager never tries to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshot(element: Any, name: str) -> None:
    out = REPO / "out" / "browser"
    out.mkdir(parents=True, exist_ok=True)
    element.screenshot(str(out / name))
    if os.environ.get("AIRFLOW_O3_UPDATE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(out / name, REPO / "docs" / name)


def _field(dialog: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return dialog.find_element(By.NAME, name)


def _label_of(dialog: Any, element: Any) -> str:
    from selenium.webdriver.common.by import By

    group = element.find_element(By.XPATH, "./ancestor::*[@role='group'][1]")
    return str(group.find_element(By.TAG_NAME, "label").text).strip()


def _replace(element: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(text)


def test_the_connection_form_shows_our_fields_and_saves_a_working_connection(api_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    behaviour = CONNECTION_TYPE["ui-field-behaviour"]
    conn_fields = CONNECTION_TYPE["conn-fields"]

    browser.get(f"{api_server.url}/connections")
    browser.find_element(By.XPATH, "//button[normalize-space()='Add Connection']").click()
    dialog = browser.find_element(By.CSS_SELECTOR, "[role=dialog]")
    _field(dialog, "connection_id").send_keys(CONN_ID)

    # The connection type list offers the hook's name; picking it draws the provider's form.
    kind = dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    kind.send_keys(CONNECTION_TYPE["connection-type"])
    options = browser.find_elements(By.CSS_SELECTOR, "[role=option]")
    assert [option.text for option in options] == [CONNECTION_TYPE["hook-name"]]
    kind.send_keys(Keys.ENTER)

    # Standard fields: relabelled, with our placeholders; the hidden ones are not in the form.
    for name, label in behaviour["relabeling"].items():
        element = _field(dialog, name)
        assert element.is_displayed(), name
        assert _label_of(dialog, element) == label
        assert element.get_attribute("placeholder") == behaviour["placeholders"][name]
    browser.implicitly_wait(0)  # looking for what must be absent: do not wait for it to appear
    for name in behaviour["hidden-fields"]:
        assert not dialog.find_elements(By.NAME, name), f"{name} should be hidden"
    browser.implicitly_wait(15)
    shown = {
        element.get_attribute("name")
        for element in dialog.find_elements(By.CSS_SELECTOR, "input[name], textarea[name]")
        if element.is_displayed()
    }
    assert shown == {"connection_id", "description", *behaviour["relabeling"]}
    assert _field(dialog, "password").get_attribute("type") == "password"
    _field(dialog, "host").send_keys(BASE_URL)
    _field(dialog, "password").send_keys(API_KEY)
    _screenshot(dialog, "connection-form.png")

    # Custom fields (conn-fields): label, description and default of each.
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Extra Fields']").click()
    for name, spec in conn_fields.items():
        element = _field(dialog, f"element_{name}")
        WebDriverWait(browser, 10).until(expected_conditions.visibility_of(element))
        assert _label_of(dialog, element) == spec["label"]
        group = element.find_element(By.XPATH, "./ancestor::*[@role='group'][1]")
        assert spec["description"] in group.text
        default = spec["schema"].get("default")  # no default (daily_budget_usd, ledger_path): empty
        assert element.get_attribute("value") == ("" if default is None else str(default))
    for name, value in TYPED_EXTRAS.items():
        _replace(_field(dialog, f"element_{name}"), value)
    _screenshot(dialog, "connection-form-extra-fields.png")

    dialog.find_element(By.XPATH, ".//button[normalize-space()='Save']").click()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(dialog))
    assert browser.find_element(By.XPATH, f"//*[normalize-space()='{CONN_ID}']").is_displayed()

    # Read it back through the REST API: what the form saved, with the key masked.
    saved = _get_json(f"{api_server.url}/api/v2/connections/{CONN_ID}")
    assert (saved["conn_type"], saved["host"], saved["password"]) == ("aimlapi", BASE_URL, "***")
    assert API_KEY not in json.dumps(saved)
    extras = json.loads(saved["extra"])
    assert {name: str(extras[name]) for name in TYPED_EXTRAS} == TYPED_EXTRAS
    assert extras["connect_timeout"] == 10 and extras["max_retry_seconds"] == 900

    # The key as stored (the REST API never shows it), and the hook's reading of the connection.
    (stored,) = json.loads(api_server.airflow("connections", "get", CONN_ID, "--output", "json"))
    assert stored["password"] == API_KEY
    from airflow_o3.settings import settings_from_connection

    settings = settings_from_connection(
        CONN_ID,
        host=stored["host"],
        port=None,
        schema=stored["schema"],
        password=stored["password"],
        extras=stored["extra_dejson"],
    )
    assert (settings.base_url, settings.model) == (BASE_URL, "o3-mini-2025-01-31")
    assert (settings.timeouts.connect, settings.timeouts.read) == (10.0, 900.0)
    assert (settings.retry.max_attempts, settings.retry.max_retry_seconds) == (3, 900.0)

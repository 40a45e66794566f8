"""The o3-mini spend page in a real browser, inside a real Airflow 3 UI, showing real recorded spend.

A throw-away Airflow home (``airflow db migrate``, SQLite) with the deployment test's environment
(``tests/deployment/test_real_scheduler.py``: its ``Deployment`` runs the api-server here). Three
example DAGs run with ``airflow dags test`` against the stand-in, so their tasks record ``usage`` and
``completion`` XComs as in production: a plain call (``o3_daily_report``), a mapped task
(``o3_enrich_rows``) and a batch (``o3_batch_enrich``, which records no model). Then the api-server
starts with the plugin loaded from its ``airflow.plugins`` entry point (from ``pyproject.toml``, added
on ``PYTHONPATH`` when the installed package predates it), headless Chromium opens *Browse -> o3-mini
spend*, and the figures it shows are checked against the XComs read back through Airflow's REST API.
The CSV download is checked the same way.

Screenshot: ``out/browser/spend-page.png``; with ``AIRFLOW_O3_UPDATE_DOCS_SCREENSHOTS=1`` (``make
screenshots``) also ``docs/spend-page.png``. Needs Debian's chromium and chromium-driver, as the
connection-form test; skipped without them unless ``AIRFLOW_O3_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import csv
import io
import subprocess
import tempfile
import tomllib
import urllib.request
from collections import defaultdict
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from airflow_o3.testing import StandInServer
from tests.browser import test_connection_form as connection_form
from tests.dagrun import AIRFLOW_3
from tests.deployment.test_real_scheduler import (
    AIRFLOW,
    REPO,
    Deployment,
    _child_env,
    _free_port,
    _healthy,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.browser

browser = connection_form.browser  # the connection-form test's headless Chromium fixture

DAGS = ("o3_daily_report", "o3_enrich_rows", "o3_batch_enrich")
FIGURES = ("calls", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "usd_spent")


def _plugin_entry_point(home: Path) -> str | None:
    """A directory holding the ``airflow.plugins`` entry point of ``pyproject.toml`` when the installed
    package does not declare it yet (an editable install made before it was added); else None."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    plugins = declared["airflow.plugins"]
    if all(entry_points(group="airflow.plugins", name=name) for name in plugins):
        return None
    dist_info = home / "entry-points" / "airflow_o3_spend_page_test-0.0.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: airflow-o3-spend-page-test\nVersion: 0.0.0\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in plugins.items())
    (dist_info / "entry_points.txt").write_text(f"[airflow.plugins]\n{lines}")
    return str(dist_info.parent)


def _airflow(deployment: Deployment, *args: str) -> None:
    done = subprocess.run(
        [AIRFLOW, *args],
        env=deployment.env,
        cwd=deployment.home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def recorded() -> Iterator[Deployment]:
    """An api-server with the plugin over a database holding real runs of the example DAGs."""
    if not AIRFLOW_3:
        pytest.skip("the spend page is part of Airflow 3's UI; on Airflow 2 the plugin adds nothing")
    if reason := connection_form._missing_browser():
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="airflow-o3-spend-"))
    port = _free_port()
    with StandInServer() as standin:
        env = _child_env(home, port, standin, standin)
        if extra := _plugin_entry_point(home):
            env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{extra}"
        deployment = Deployment(home, port, env)
        try:
            _airflow(deployment, "db", "migrate")
            for dag_id in DAGS:
                _airflow(deployment, "dags", "test", dag_id)
            deployment.start("api-server")
            deployment.wait_until(
                "the api-server answering", lambda: _healthy(deployment, "metadatabase"), 90
            )
            yield deployment
        finally:
            deployment.stop_all()


def _recorded_usage(deployment: Deployment) -> list[dict[str, Any]]:
    """Every ``usage`` XCom, read through Airflow's REST API, with its task's coordinates."""
    listing = deployment.api(
        "GET", "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries?xcom_key=usage&limit=1000"
    )
    found = []
    for entry in listing["xcom_entries"]:
        path = (
            f"/api/v2/dags/{entry['dag_id']}/dagRuns/{quote(entry['run_id'], safe='')}/taskInstances/"
            f"{entry['task_id']}/xcomEntries/usage?map_index={entry['map_index']}&deserialize=true&stringify=false"
        )
        found.append({**entry, "usage": deployment.api("GET", path)["value"]})
    return found


def _figures(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page should show for these usage records, as the page writes it."""
    tokens = {
        "calls": len(usages),
        "prompt_tokens": sum(u["prompt_tokens"] for u in usages),
        "cached_tokens": sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usages),
        "completion_tokens": sum(u["completion_tokens"] for u in usages),
        "reasoning_tokens": sum(
            (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) for u in usages
        ),
    }
    shown = {name: f"{value:,}" for name, value in tokens.items()}
    shown["usd_spent"] = f"${sum(u['usd_spent'] for u in usages):,.4f}"
    return shown


def _open_the_page(deployment: Deployment, browser: Any) -> None:
    """Browse -> o3-mini spend in Airflow's UI; then into the page's frame, once its figures are in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(f"{deployment.url}/")
    browser.find_element(By.XPATH, "//button[normalize-space()='Browse']").click()
    browser.find_element(By.XPATH, "//a[normalize-space()='o3-mini spend']").click()
    WebDriverWait(browser, 30).until(expected_conditions.url_contains("/plugin/o3-spend"))
    frame = browser.find_element(By.CSS_SELECTOR, "iframe[src*='o3-spend']")
    WebDriverWait(browser, 30).until(expected_conditions.frame_to_be_available_and_switch_to_it(frame))
    browser.find_element(By.CSS_SELECTOR, "#status[data-loaded='7']")


def test_the_spend_page_shows_the_recorded_usage_of_real_runs_per_dag_with_links_and_csv(recorded, browser):
    from selenium.webdriver.common.by import By

    usages = _recorded_usage(recorded)
    per_dag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in usages:
        per_dag[entry["dag_id"]].append(entry["usage"])
    assert set(per_dag) == set(DAGS)
    assert len(per_dag["o3_enrich_rows"]) > 1  # the mapped task's instances, one record each

    _open_the_page(recorded, browser)

    expected = _figures([entry["usage"] for entry in usages])
    shown = {name: browser.find_element(By.ID, f"total-{name}").text for name in FIGURES}
    assert shown == expected
    for dag_id, dag_usages in per_dag.items():
        row = browser.find_element(By.CSS_SELECTOR, f"#per-dag tr[data-key='{dag_id}']")
        cells = {name: row.find_element(By.CSS_SELECTOR, f"td[data-field='{name}']").text for name in FIGURES}
        assert cells == _figures(dag_usages), dag_id
    model_row = browser.find_element(By.CSS_SELECTOR, "#per-model tr[data-key='not recorded']")
    assert model_row.find_element(By.CSS_SELECTOR, "td[data-field='calls']").text == "1"  # the batch

    # The mapped task links to its mapped instances in Airflow's UI.
    (enrich,) = [entry for entry in usages if entry["dag_id"] == "o3_enrich_rows"][:1]
    link = browser.find_element(By.XPATH, "//table[@id='top-tasks']//a[contains(., 'enrich_row [mapped]')]")
    run_path = f"/dags/o3_enrich_rows/runs/{quote(enrich['run_id'], safe='')}"
    assert link.get_attribute("href") == f"{recorded.url}{run_path}/tasks/enrich_row/mapped"
    assert link.get_attribute("target") == "_top"

    browser.switch_to.default_content()
    connection_form._screenshot(browser.find_element(By.TAG_NAME, "body"), "spend-page.png")

    with urllib.request.urlopen(f"{recorded.url}/o3-spend/api/spend.csv?days=7", timeout=30) as response:
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    assert len(rows) == len(usages)
    assert f"${sum(float(row['usd_spent']) for row in rows):,.4f}" == expected["usd_spent"]
    assert {row["dag_id"] for row in rows} == set(DAGS)

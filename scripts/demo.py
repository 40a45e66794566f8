"""Run the daily-report example DAG end to end and print the reply and the usage.

``make demo`` runs this. It needs no key: it starts the stand-in server on 127.0.0.1 and uses a
throw-away SQLite Airflow home in ``.airflow-demo/``. With ``AIMLAPI_API_KEY`` set, the same DAG
calls the real service instead (and costs a few tenths of a cent).
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".airflow-demo"
DAG_ID = "o3_daily_report"
TASK_ID = "write_report"


def _configure_airflow() -> None:
    """Point Airflow at a local home and the repo's dags/ before anything imports it."""
    os.environ["AIRFLOW_HOME"] = str(HOME)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{HOME / 'airflow.db'}"
    os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = "airflow-o3-demo-jwt-secret-not-a-real-secret"
    os.environ["O3_REPORT_DIR"] = str(HOME / "reports")
    HOME.mkdir(exist_ok=True)


def _xcoms(dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id
            )
        )
        return {row.key: XCom.deserialize_value(row) for row in rows}


def main() -> int:
    _configure_airflow()
    with ExitStack() as stack:
        if os.environ.get("AIMLAPI_API_KEY"):
            target = "the AI/ML API service"
            os.environ["AIRFLOW_CONN_AIMLAPI_DEFAULT"] = json.dumps(
                {"conn_type": "aimlapi", "password": os.environ["AIMLAPI_API_KEY"]}
            )
        else:
            from airflow_o3.testing import StandInServer

            server = stack.enter_context(StandInServer())
            target = f"the stand-in server at {server.base_url}"
            os.environ["AIRFLOW_CONN_AIMLAPI_DEFAULT"] = server.connection_json("demo-key-not-secret")

        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils import db

        print(f"Preparing the Airflow metadata database in {HOME} ...", flush=True)
        db.initdb()
        bag = DagBag(dag_folder=REPO / "dags", bundle_path=REPO / "dags", bundle_name="dags-folder")
        if DAG_ID not in bag.dags:
            print(f"{DAG_ID} did not load: {bag.import_errors}", file=sys.stderr)
            return 1
        print(f"Running {DAG_ID} with dag.test() against {target} ...", flush=True)
        run = bag.dags[DAG_ID].test()
        values = _xcoms(DAG_ID, run.run_id, TASK_ID)
        saved = _xcoms(DAG_ID, run.run_id, "save_report").get("return_value")

    print("\n" + "=" * 72)
    print(f"DAG run {run.run_id}: {run.state}")
    if "return_value" not in values:
        print(f"{TASK_ID} produced no reply; see the task log above.")
        return 1
    print(f"\nReply (XCom return_value of {TASK_ID}):\n{values['return_value']}")
    print(f"\nUsage (XCom usage):\n{json.dumps(values.get('usage'), indent=2)}")
    print(f"\nCompletion (XCom completion):\n{json.dumps(values.get('completion'), indent=2)}")
    print(f"\nReport written to: {saved}")
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    sys.exit(main())

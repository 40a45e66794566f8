"""The stand-in's billing endpoint answers as the service's billing contract says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker

import airflow_o3.contract
from airflow_o3.testing import StandInServer
from airflow_o3.testing.billing import billing_base_url
from tests.contract import openapi_to_json_schema

CONTRACT = Path(airflow_o3.contract.__file__).resolve().parent / "billing-balance.openapi.json"
OPERATION = json.loads(CONTRACT.read_text())["paths"]["/v1/billing/balance"]["get"]
REPLY_SCHEMA = openapi_to_json_schema(OPERATION["responses"]["200"]["content"]["application/json"]["schema"])


def balance(server: StandInServer, **headers: str) -> requests.Response:
    return requests.get(f"{billing_base_url(server)}/v1/billing/balance", headers=headers, timeout=10)


@pytest.mark.parametrize("credits", [10_000_000, 5_000, 0])
def test_the_balance_reply_is_valid_against_the_billing_contract(credits):
    with StandInServer() as server:
        server.billing.credits = credits
        reply = balance(server, Authorization="Bearer k")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    Draft202012Validator(REPLY_SCHEMA, format_checker=FormatChecker()).validate(reply.json())
    assert reply.json()["balance"] == credits
    assert reply.json()["lowBalance"] is (credits < 10_000)


def test_the_contract_asks_for_a_bearer_key_and_the_stand_in_refuses_a_request_without_one():
    assert OPERATION["security"] == [{"access-token": []}]
    with StandInServer() as server:
        assert balance(server).status_code == 401


def test_a_server_with_an_api_key_refuses_another_key():
    with StandInServer(api_key="right") as server:
        assert balance(server, Authorization="Bearer wrong").status_code == 401
        assert balance(server, Authorization="Bearer right").status_code == 200


def test_a_test_can_make_the_billing_host_fail():
    with StandInServer() as server:
        server.billing.fail_with = 503
        assert balance(server, Authorization="Bearer k").status_code == 503

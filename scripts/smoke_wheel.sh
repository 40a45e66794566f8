#!/usr/bin/env bash
# Packaging smoke test: build the sdist and wheel with `python -m build`, install the wheel into a fresh
# venv next to apache-airflow (from PyPI), and run a smoke DAG against the stand-in server that ships
# in the wheel. Nothing from the source tree is importable in that venv.
#
#   scripts/smoke_wheel.sh                 # Airflow 3.3.2
#   AIRFLOW_VERSION=2.11.0 scripts/smoke_wheel.sh
#
# BUILD_PYTHON: a Python with `build` installed (default: .venv/bin/python); PYTHON: the interpreter
# for the fresh venv (default: python3). The work dir is removed unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
BUILD_PYTHON=${BUILD_PYTHON:-.venv/bin/python}
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/airflow-o3-wheel.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT

echo "== build (sdist and wheel) into $WORK/dist"
"$BUILD_PYTHON" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/airflow_o3-*.whl)
VERSION=$("$BUILD_PYTHON" -c 'import airflow_o3; print(airflow_o3.__version__)')
case "$(basename "$WHEEL")" in
    "airflow_o3-$VERSION-py3-none-any.whl") echo "   $(basename "$WHEEL") (version from airflow_o3/__init__.py)" ;;
    *) echo "wheel $(basename "$WHEEL") does not carry version $VERSION"; exit 1 ;;
esac

echo "== wheel contents"
"$BUILD_PYTHON" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
required = ["airflow_o3/py.typed", "airflow_o3/get_provider_info.py", "airflow_o3/testing/server.py",
            "airflow_o3/contract/o3-mini.openapi.json", "airflow_o3/contract/billing-balance.openapi.json",
            "airflow_o3/plugins/spend_page.html", "airflow_o3/decorators/o3_mini.py",
            "airflow_o3/hooks/o3mini.py", "airflow_o3/operators/o3mini.py"]
missing = [name for name in required if name not in names]
strays = [name for name in names if name.startswith(("tests/", "dags/", "scripts/", "docs/"))]
entry_points = next(zipfile.ZipFile(sys.argv[1]).read(n).decode() for n in names if n.endswith("entry_points.txt"))
assert not missing, f"missing from the wheel: {missing}"
assert not strays, f"not part of the package: {strays}"
assert "[apache_airflow_provider]" in entry_points, entry_points
assert "[pytest11]" not in entry_points, "the testing kit is opt-in: no pytest plugin is registered"
assert "[airflow.plugins]" in entry_points, "the spend page's plugin entry point"
print(f"   {len(names)} files; provider entry point present, no pytest plugin; no tests, dags or docs")
PY

echo "== fresh venv with the wheel and apache-airflow==$AIRFLOW_VERSION"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
PINS=()
case "$AIRFLOW_VERSION" in 2.*) PINS=("universal-pathlib<0.3") ;; esac  # as Airflow 2.11's constraints
"$WORK/venv/bin/uv" pip install --quiet --python "$WORK/venv/bin/python" "$WHEEL" "apache-airflow==$AIRFLOW_VERSION" "${PINS[@]}"

echo "== smoke DAG against the stand-in server"
cd "$WORK"  # away from the source tree: airflow_o3 must come from the wheel
"$WORK/venv/bin/python" "$REPO/scripts/smoke_dag.py" "$VERSION"
echo "== wheel smoke test passed (Airflow $AIRFLOW_VERSION)"

"""Cold start: a fresh process imports app.py and serves its first request.

Measured against a baseline in the same run: a fresh process that imports chalice, boto3
and pydantic and creates an empty Chalice app (the floor any Chalice app on Lambda pays).
Each is the median of several fresh processes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 7

APP = r'''
import time, os, sys, json, base64
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
def http(method, resource, path, body=None, headers=None, params=None):
    event = {"resource": resource, "path": path, "httpMethod": method, "headers": headers or {},
             "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
             "pathParameters": params,
             "stageVariables": None, "body": body, "isBase64Encoded": False,
             "requestContext": {"resourcePath": resource, "httpMethod": method, "path": path, "stage": "api",
                                "requestId": "r", "identity": {"sourceIp": "127.0.0.1"}}}
    return app.app(event, None)
body = json.dumps({"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}})
auth = "Basic " + base64.b64encode((os.environ["KEY"] + ":").encode()).decode()
r = http("POST", "/v1/{call}", "/v1/track", body, {"content-type": "application/json", "authorization": auth},
         {"call": "track"})
t2 = time.perf_counter()
assert r["statusCode"] == 200, r
heavy = sorted(m for m in ("numpy", "scipy", "sklearn", "liquid", "babel") if m in sys.modules)
print(json.dumps({"import": t1 - t0, "total": t2 - t0, "heavy": heavy, "modules": len(sys.modules)}))
'''

BASELINE = r'''
import time, json, sys
t0 = time.perf_counter()
import chalice, boto3, pydantic
app = chalice.Chalice(app_name="baseline")
t1 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "total": t1 - t0, "heavy": [], "modules": len(sys.modules)}))
'''


def run(code: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"cold start probe failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import os

    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "OMNICAST_RUNTIME": "local", "OMNICAST_DATA_DIR": data}
        key = subprocess.run([str(Path(sys.executable).with_name("omnicast")), "keys", "create", "--name", "bench",
                              "--data-dir", data], capture_output=True, text=True, env=env, check=True).stdout.strip()
        env["KEY"] = key
        apps = [run(APP, env) for _ in range(RUNS)]
        bases = [run(BASELINE, env) for _ in range(RUNS)]
    app_ms = statistics.median(r["total"] for r in apps) * 1000
    import_ms = statistics.median(r["import"] for r in apps) * 1000
    base_ms = statistics.median(r["total"] for r in bases) * 1000
    print(f"cold start, median of {RUNS} fresh processes (Python {sys.version.split()[0]})")
    print(f"  {'omnicast: import app.py':<52} {import_ms:8.1f} ms")
    print(f"  {'omnicast: import + first POST /v1/track (local)':<52} {app_ms:8.1f} ms  ({apps[0]['modules']} modules)")
    print(f"  {'baseline: import chalice, boto3, pydantic + Chalice()':<52} {base_ms:8.1f} ms  "
          f"({bases[0]['modules']} modules)")
    print(f"  ratio omnicast / baseline: {app_ms / base_ms:.2f}")
    heavy = apps[0]["heavy"] or "none"
    print(f"  heavy modules loaded on the HTTP path: {heavy} (numpy, scipy, sklearn must be absent)")

"""The deployment package holds the core and every plugin, and serves requests on its own.

The build runs `chalice package` (Python 3.12) with the plugins vendored; the package is
unzipped and imported by a fresh `python -S` (no site-packages: nothing from this venv
can leak in), which discovers the plugins from the package, serves HTTP events as API
Gateway sends them, runs the SQS worker handler, and proves the HTTP path never imported
numpy, scipy or scikit-learn.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra.build import UNZIPPED_LIMIT, ZIP_LIMIT, build

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

PROBE = r'''
import base64, json, os, sys
unz = sys.argv[1]
sys.path[:0] = [unz]
os.environ.update(OMNICAST_RUNTIME="local", OMNICAST_DATA_DIR=sys.argv[2])

def http(method, resource, path, body=None, headers=None, params=None):
    event = {"resource": resource, "path": path, "httpMethod": method, "headers": headers or {},
             "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
             "pathParameters": params, "stageVariables": None, "body": body, "isBase64Encoded": False,
             "requestContext": {"resourcePath": resource, "httpMethod": method, "path": path, "stage": "api",
                                "requestId": "r1", "identity": {"sourceIp": "127.0.0.1"}}}
    return app.app(event, None)

import app
out = {"health": http("GET", "/health", "/health")["statusCode"]}
out["heavy_after_health"] = sorted(m for m in ("numpy", "scipy", "sklearn") if m in sys.modules)
from chalicelib.runtime import get_runtime
rt = get_runtime()
key = rt.credentials.create_key("write", "pkg")
auth = "Basic " + base64.b64encode((key + ":").encode()).decode()
body = json.dumps({"userId": "pkg-1", "messageId": "pkg-m1", "traits": {"email": "pkg@example.com"}})
r = http("POST", "/v1/{call}", "/v1/identify", body, {"content-type": "application/json", "authorization": auth},
         {"call": "identify"})
out["identify"] = r["statusCode"]
bad = http("POST", "/v1/{call}", "/v1/identify", "{oops", {"content-type": "application/json",
           "authorization": auth}, {"call": "identify"})
out["bad_json"] = [bad["statusCode"], json.loads(bad["body"])["field"]]
[msg] = rt.stores.queue.receive("ingest")
record = {"messageId": "sqs-1", "receiptHandle": msg.receipt, "body": json.dumps(msg.body), "attributes": {},
          "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
          "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:omnicast-dev-ingest", "awsRegion": "us-east-1"}
app.ingest_worker({"Records": [record]}, None)
out["events_stored"] = rt.stores.events.count("segment")
info = rt.host.describe()
out["plugins"] = {p["name"]: p["version"] for p in info["plugins"]}
out["channels"] = sorted(info["channels"])
out["plugin_files"] = {p["name"]: sys.modules[p["module"]].__file__ for p in info["plugins"]}
out["heavy"] = sorted(m for m in ("numpy", "scipy", "sklearn") if m in sys.modules)
out["site_packages"] = [p for p in sys.path if "site-packages" in p]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "dev"
    report = build("dev", out)
    unz = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(out / "deployment.zip") as zf:
        zf.extractall(unz)
    return report, out, unz


def test_package_sizes_stay_within_lambda_limits(package):
    report, _out, _ = package
    assert report["unzipped_mb"] * 2**20 < UNZIPPED_LIMIT
    # over 50 MB zipped the package must go through S3 (aws cloudformation package does)
    assert report["needs_s3_upload"] == (report["zip_mb"] * 2**20 > ZIP_LIMIT)
    assert report["pruned_mb"] > 0
    assert sorted(report["plugins"]) == sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml"))


def test_the_unzipped_package_serves_requests_with_its_own_plugins(package, tmp_path):
    _, _, unz = package
    result = subprocess.run([sys.executable, "-S", "-c", PROBE, str(unz), str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["site_packages"] == []
    assert out["health"] == 200 and out["identify"] == 200 and out["bad_json"] == [400, "body"]
    assert out["events_stored"] == 1
    assert {"smtp", "sandbox"} <= set(out["plugins"]) and all(out["plugins"].values())
    assert {"smtp", "sandbox_sms"} <= set(out["channels"])
    assert all(path.startswith(str(unz)) for path in out["plugin_files"].values()), out["plugin_files"]
    assert out["heavy_after_health"] == [] and out["heavy"] == []


ML_PROBE = r'''
import json, sys
sys.path[:0] = [sys.argv[1]]
import numpy as np
from omnicast_models.clv import BetaGeoModel
from omnicast_models.churn import ChurnClassifier
rng = np.random.default_rng(1)
X = rng.normal(size=(200, 3))
y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
clf = ChurnClassifier().fit(X, y)
auc_like = float(np.mean(clf.predict_proba(X)[:, 1][y == 1]) - np.mean(clf.predict_proba(X)[:, 1][y == 0]))
print(json.dumps({"numpy": np.__file__, "separation": auc_like}))
'''


def test_the_scoring_functions_import_their_ml_stack_from_the_package(package, tmp_path):
    """The scoring and training functions run from the same package: numpy, scipy and
    scikit-learn (Lambda's manylinux wheels) must be in it and work without this venv."""
    _, _, unz = package
    result = subprocess.run([sys.executable, "-S", "-c", ML_PROBE, str(unz)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["numpy"].startswith(str(unz)) and out["separation"] > 0.2


def test_every_plugin_dependency_is_in_the_package_requirements(monkeypatch, tmp_path):
    from infra import build as build_module

    build_module.check_plugin_requirements()  # the real files: nothing missing
    fake = tmp_path / "requirements.txt"
    fake.write_text("pluggy\n")
    monkeypatch.setattr(build_module, "ROOT", tmp_path)
    (tmp_path / "plugins" / "x").mkdir(parents=True)
    (tmp_path / "plugins" / "x" / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["numpy>=1.26"]\n')
    with pytest.raises(build_module.BuildError, match="x: numpy"):
        build_module.check_plugin_requirements()


def test_the_packaged_template_passes_cfn_lint(package):
    _, out, _ = package
    template = json.loads((out / "sam.json").read_text())
    assert {"Table", "IngestQueue", "IngestDeadLetterQueue", "SendQueue", "DataBucket", "APIHandler"} <= set(
        template["Resources"])
    assert template["Resources"]["IngestWorker"]["DependsOn"] == ["IngestQueue"]
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), str(out / "sam.json")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

"""The installed ``omnicast`` command: keys, plugins, config errors, and ``serve`` over real HTTP."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import free_port

OMNICAST = shutil.which("omnicast", path=str(Path(sys.executable).parent)) or "omnicast"


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OMNICAST_")}
    full_env.update(env or {})
    return subprocess.run([OMNICAST, *args], capture_output=True, text=True, env=full_env, input=stdin, timeout=60)


def test_keys_are_created_listed_and_revoked(tmp_path):
    data = str(tmp_path / "d")
    created = run("keys", "create", "--kind", "write", "--name", "site", "--data-dir", data)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ocw_") and len(key) > 20
    listed = run("keys", "list", "--data-dir", data)
    assert "write" in listed.stdout and "site" in listed.stdout and key not in listed.stdout
    assert run("keys", "revoke", "--kind", "write", "--name", "site", "--data-dir", data).returncode == 0
    assert run("keys", "revoke", "--kind", "write", "--name", "site", "--data-dir", data).returncode == 1


def test_webhook_secrets_are_never_printed(tmp_path):
    data = str(tmp_path / "d")
    added = run("webhook-secret", "add", "shopify", "--data-dir", data, stdin="whsec_topsecret\n")
    assert added.returncode == 0 and "1 active" in added.stdout
    run("webhook-secret", "add", "shopify", "--data-dir", data, "--secret", "whsec_second")
    listed = run("webhook-secret", "list", "shopify", "--data-dir", data)
    assert "2 active" in listed.stdout and "whsec" not in listed.stdout


def test_plugins_lists_the_built_in_plugins_with_versions():
    out = run("plugins", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    names = {p["name"]: p for p in info["plugins"]}
    assert {"smtp", "sandbox"} <= set(names)
    assert names["smtp"]["version"] and "register_channels" in names["smtp"]["hooks"]
    table = run("plugins")
    assert "smtp" in table.stdout and "channels:" in table.stdout


def test_bad_configuration_is_one_line_and_exit_2(tmp_path):
    out = run("config", env={"OMNICAST_RUNTIME": "gcp"})
    assert out.returncode == 2
    assert "runtime" in out.stderr and "Traceback" not in out.stderr
    out = run("keys", "create", "--kind", "write", "--name", "", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "name must be" in out.stderr


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.slow
def test_serve_runs_api_workers_and_scheduler_over_real_http(tmp_path, smtp_server):
    data = str(tmp_path / "serve")
    key = run("keys", "create", "--kind", "write", "--name", "site", "--data-dir", data).stdout.strip()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNICAST_")}
    env.update({
        "OMNICAST_CHANNELS__EMAIL": "smtp",
        "OMNICAST_PLUGIN_SETTINGS__SMTP__PORT": str(smtp_server.port),
        "OMNICAST_PUBLIC_URL": f"http://127.0.0.1:{port}",
    })
    proc = subprocess.Popen([OMNICAST, "serve", "--port", str(port), "--data-dir", data], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()  # printed once the port is bound
        assert "Omnicast serving on" in banner, proc.stderr.read() if proc.poll() is not None else banner
        status, _ = _get(f"http://127.0.0.1:{port}/health")
        assert status == 200
        # the welcome e-mail goes now, not after the quiet hours: the customer's clock reads noon
        offset = 12 - datetime.now(UTC).hour
        zone = "Etc/GMT" + (f"{-offset:+d}" if offset else "")  # Etc/GMT-5 is five hours ahead of UTC
        body = json.dumps({"userId": "cli-1", "messageId": "cli-m1",
                           "traits": {"email": "cli@example.com", "first_name": "Cleo", "timezone": zone}}).encode()
        auth = base64.b64encode(f"{key}:".encode()).decode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/identify", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        assert smtp_server.wait_for(1), "the serve process's workers sent nothing"
        assert [m[1] for m in smtp_server.messages] == [["cli@example.com"]]
        assert smtp_server.messages[0][2]["Subject"] == "Welcome to Omnicast Demo Shop, Cleo!"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "cli@example.com" not in out + err  # no personal data in the server's output


def test_journeys_from_the_cli(tmp_path):
    data = str(tmp_path / "d")
    path = tmp_path / "j.yaml"
    path.write_text("name: cli_journey\ntrigger: {event: X}\nsteps:\n  - {id: s, type: send, chanel: email}\n")
    bad = run("journeys", "apply", str(path), "--data-dir", data)
    assert bad.returncode == 2 and "j.yaml:4: steps.0.chanel: unknown field" in bad.stderr
    path.write_text("name: cli_journey\ntrigger: {event: X}\nsteps:\n"
                    "  - {id: s, type: send, channel: email, template: welcome}\n")
    assert run("journeys", "apply", str(path), "--data-dir", data).returncode == 0
    assert "cli_journey" in run("journeys", "list", "--data-dir", data).stdout
    assert run("journeys", "pause", "cli_journey", "--data-dir", data).returncode == 0
    assert "paused" in next(line for line in run("journeys", "list", "--data-dir", data).stdout.splitlines()
                            if line.startswith("cli_journey"))
    missing = run("journeys", "dry-run", "cli_journey", "--data-dir", data)
    assert missing.returncode == 2 and "--profile" in missing.stderr

"""Build the deployment package: plugins vendored, ``chalice package`` with our merge template.

    python -m infra.build --stage dev --out build/dev

Chalice ships only ``app.py``, ``chalicelib/``, ``vendor/`` and the packages of
``requirements.txt``. Each plugin is its own distribution, so it is installed into
``vendor/`` with its ``.dist-info`` (entry points included): on Lambda ``/var/task`` is on
``sys.path`` and importlib.metadata finds them there, as it does in a virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lambda's 50 MB applies to a zip uploaded directly; `aws cloudformation package` uploads it to
# S3, where the hard limit is the unzipped size of a function and its layers
ZIP_LIMIT = 50 * 1024 * 1024
UNZIPPED_LIMIT = 250 * 1024 * 1024
# what no function imports: the ML stack's own test suites, type stubs, Cython and C sources
PRUNE_DIRS = ("tests", "test", "__pycache__")
PRUNE_SUFFIXES = (".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp")


class BuildError(Exception):
    pass


def check_python() -> None:
    if sys.version_info[:2] != (3, 12):
        # chalice package picks wheels for the interpreter it runs on; from 3.11 it silently
        # drops the numpy/scipy/scikit-learn wheels the 3.12 runtime needs and still exits 0
        raise BuildError(f"build with Python 3.12 (the Lambda runtime), not {sys.version.split()[0]}")


def plugins() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def check_plugin_requirements() -> None:
    """Plugins are vendored without their dependencies (``--no-deps``: pip would fetch this
    machine's wheels, not Lambda's), so each dependency must be in requirements.txt, which
    ``chalice package`` resolves for the Lambda platform."""
    listed = {_name(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")}
    missing = []
    for plugin in plugins():
        project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
        missing += [f"{plugin.name}: {dep}" for dep in project.get("dependencies", [])
                    if _name(dep) not in listed | {"pydantic"}]
    if missing:
        raise BuildError("plugin dependencies missing from requirements.txt: " + "; ".join(missing))


def vendor_plugins() -> list[str]:
    vendor = ROOT / "vendor"
    shutil.rmtree(vendor, ignore_errors=True)
    vendor.mkdir()
    names = []
    for plugin in plugins():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target",
             str(vendor), str(plugin)],
            check=True,
        )
        names.append(plugin.name)
    for junk in vendor.glob("**/__pycache__"):
        shutil.rmtree(junk, ignore_errors=True)
    return names


def stage_env(stage: str) -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    if stage not in config["stages"]:
        raise BuildError(f"unknown stage {stage!r}; .chalice/config.json has {', '.join(config['stages'])}")
    return dict(config["stages"][stage].get("environment_variables", {}))


def merge_template(stage: str, out: Path) -> Path:
    template = json.loads((ROOT / "infra" / "resources.json").read_text())
    template["Parameters"]["Stage"]["Default"] = stage
    path = out.parent / f"merge-{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(template, indent=2))
    return path


def prune(zip_path: Path) -> int:
    """Rewrite the package without test suites, stubs and sources; returns the bytes removed."""
    kept = zip_path.with_suffix(".pruned.zip")
    removed = 0
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(kept, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            parts = info.filename.split("/")
            top_level_code = len(parts) <= 2  # app.py, chalicelib/ ... are ours: never pruned
            if not top_level_code and (any(p in PRUNE_DIRS for p in parts[1:-1])
                                       or info.filename.endswith(PRUNE_SUFFIXES)):
                removed += info.file_size
                continue
            dst.writestr(info, src.read(info))
    kept.replace(zip_path)
    return removed


def sizes(zip_path: Path) -> tuple[int, int]:
    with zipfile.ZipFile(zip_path) as zf:
        return zip_path.stat().st_size, sum(i.file_size for i in zf.infolist())


def build(stage: str, out: Path) -> dict[str, object]:
    check_python()
    check_plugin_requirements()
    out = out.resolve()
    vendored = vendor_plugins()
    env = {**os.environ, **stage_env(stage)}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    merge = merge_template(stage, out)
    shutil.rmtree(out, ignore_errors=True)
    chalice = Path(sys.executable).with_name("chalice")
    result = subprocess.run(
        [str(chalice), "package", "--stage", stage, "--merge-template", str(merge), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"chalice package failed:\n{result.stdout}\n{result.stderr}")
    pruned = prune(out / "deployment.zip")
    zipped, unzipped = sizes(out / "deployment.zip")
    if unzipped > UNZIPPED_LIMIT:
        raise BuildError(f"deployment package too big: {unzipped / 2**20:.1f} MB unzipped (Lambda's limit 250 MB)")
    return {"stage": stage, "out": str(out), "plugins": vendored, "zip_mb": round(zipped / 2**20, 1),
            "unzipped_mb": round(unzipped / 2**20, 1), "pruned_mb": round(pruned / 2**20, 1),
            "needs_s3_upload": zipped > ZIP_LIMIT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        report = build(args.stage, args.out or ROOT / "build" / args.stage)
    except BuildError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 2
    print(f"built {report['out']}: deployment.zip {report['zip_mb']} MB "
          f"({report['unzipped_mb']} MB unzipped of Lambda's 250; {report['pruned_mb']} MB of test suites and "
          f"sources left out), plugins vendored: {', '.join(report['plugins'])}")
    print(f"next: aws cloudformation package --template-file {report['out']}/sam.json --s3-bucket <artifacts> "
          f"--output-template-file {report['out']}/packaged.yaml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

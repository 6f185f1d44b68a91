"""The ``omnicast`` command line: serve the local stack, inspect plugins, manage keys.

Every command reads the same configuration as the app (``OMNICAST_*`` variables and an
optional TOML file) and answers bad input with a one-line message and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chalicelib.config import Settings, load_settings
from chalicelib.errors import BadRequest, OmnicastError


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return load_settings(overrides=overrides)


def _runtime(args: argparse.Namespace) -> Any:
    from chalicelib.runtime import Runtime

    return Runtime(_settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from chalicelib.runtime import Runtime
    from chalicelib.server import LocalStack

    settings = _settings(args)
    if settings.runtime != "local" and not args.allow_aws:
        print("serve runs the embedded default; set OMNICAST_RUNTIME=local (or pass --allow-aws)", file=sys.stderr)
        return 2
    runtime = Runtime(settings)
    runtime.scoring.schedule(runtime.stores.journeys, force=True)  # weekly training, daily scoring
    stack = LocalStack(runtime, host=args.host, port=args.port).start()
    print(f"Omnicast serving on {stack.url} (data in {settings.data_dir.resolve()}); Ctrl-C stops", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    stack.stop()
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from chalicelib.plugin_host import PluginHost

    info = PluginHost(_settings(args).plugins).load().describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{'plugin':<14} {'distribution':<22} {'version':<9} hooks")
    for p in info["plugins"]:
        print(f"{p['name']:<14} {p['distribution'] or '-':<22} {p['version'] or '-':<9} {', '.join(p['hooks'])}")
    for name, why in info["skipped"].items():
        print(f"{name:<14} (not loaded: {why})")
    print("\nchannels: " + (", ".join(f"{n} ({c['channel']})" for n, c in info["channels"].items()) or "none"))
    print("models:   " + (", ".join(f"{n} ({c['kind']})" for n, c in info["models"].items()) or "none"))
    print("sources:  " + (", ".join(info["sources"]) or "none"))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    creds = _runtime(args).credentials
    if args.action == "create":
        key = creds.create_key(args.kind, args.name)
        print(key)
        print(f"({args.kind} key {args.name!r}: shown once, stored hashed)", file=sys.stderr)
    elif args.action == "list":
        for k in creds.list_keys():
            print(f"{k.kind:<6} {k.name:<20} created {k.created_at}")
    else:
        gone = creds.revoke(args.kind, args.name)
        print(f"revoked {gone} {args.kind} key(s) named {args.name!r}")
        if not gone:
            return 1
    return 0


def cmd_webhook_secret(args: argparse.Namespace) -> int:
    creds = _runtime(args).credentials
    if args.action == "add":
        secret = args.secret if args.secret is not None else sys.stdin.readline().strip()
        creds.add_webhook_secret(args.source, secret)
        print(f"added a webhook secret for {args.source} ({len(creds.webhook_secrets(args.source))} active)")
    elif args.action == "list":
        print(f"{args.source}: {len(creds.webhook_secrets(args.source))} active secret(s) (values never shown)")
    else:
        print(f"removed {creds.remove_webhook_secrets(args.source)} secret(s) of {args.source}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from chalicelib.services.bulk_import import BulkImporter, open_source, read_rows

    runtime = _runtime(args)
    fmt = args.format or ("jsonl" if args.source.endswith((".jsonl", ".ndjson")) else "csv")
    s3 = None
    if args.source.startswith("s3://"):
        import boto3

        aws = runtime.settings.aws
        s3 = boto3.client("s3", region_name=aws.region, endpoint_url=aws.endpoint_url)
    stream, _ = open_source(args.source, s3)
    importer = BulkImporter(runtime.processor, runtime.catalog, runtime.clock.now)
    with stream, tqdm(unit=" rows", desc=f"importing {args.kind}", file=sys.stderr, disable=args.quiet) as bar:
        report = importer.run(args.kind, read_rows(stream, fmt), progress=lambda _: bar.update(1))
    print(f"{report.kind}: {report.rows} rows, {report.imported} imported, {len(report.rejected)} rejected")
    for r in report.rejected[:50]:
        print(f"  row {r.row}: {r.field or '-'}: {r.reason}")
    if len(report.rejected) > 50:
        print(f"  ... and {len(report.rejected) - 50} more (see --report)")
    if args.report:
        with open(args.report, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["row", "field", "reason"])
            writer.writerows([r.row, r.field or "", r.reason] for r in report.rejected)
    return 0 if not report.rejected else 1


def _print(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_journeys(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    authoring = rt.authoring
    if args.action == "list":
        for j in authoring.list_journeys():
            state = "paused" if j["paused"] else ("on" if j["enabled"] else "off")
            print(f"{j['name']:<24} v{j['version']:<4} {state:<6} {j['description']}")
        return 0
    if args.action == "apply":
        if not args.target:
            raise BadRequest("apply needs a file: omnicast journeys apply journey.yaml", field="file")
        path = Path(args.target)
        if not path.is_file():
            raise BadRequest(f"no such file: {path}", field="file")
        journey = authoring.save_journey(path.read_text(), source=str(path))
        print(f"saved journey {journey.name} version {journey.version}")
        return 0
    if not args.target:
        raise BadRequest(f"{args.action} needs a journey name", field="name")
    if args.action in ("pause", "resume"):
        authoring.pause(args.target, args.action == "pause")
    elif args.action == "delete":
        authoring.delete(args.target)
    elif args.action == "dry-run":
        if not args.profile:
            raise BadRequest("dry-run needs --profile PROFILE_ID", field="profile")
        for step in authoring.dry_run(args.target, args.profile):
            extra = step.get("subject") or step.get("reason") or step.get("until") or ""
            print(f"{step['at']:<34} {step['step']:<22} {step['action']:<14} {step.get('decision', ''):<9} {extra}")
        return 0
    print(f"{args.action}: {args.target}")
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    if args.action == "list":
        for seg in rt.segments.segments.values():
            print(f"{seg.name:<24} {seg.description}")
    elif args.action == "apply":
        data = json.loads(Path(args.target or "").read_text()) if args.target and Path(args.target).is_file() else None
        if data is None:
            raise BadRequest("apply needs a JSON file with name and rule", field="file")
        print(f"saved segment {rt.segments.save(data).name}")
    elif args.action == "preview":
        if not args.target:
            raise BadRequest("preview needs a segment name", field="name")
        p = rt.segments.preview(args.target)
        print(f"{p.segment}: {p.count} profiles ({p.method}, {p.seconds * 1000:.1f} ms); sample: {', '.join(p.sample)}")
    else:
        print(f"sweep: {rt.segments.sweep()} profiles changed segments")
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    if args.action == "apply":
        path = Path(args.file or "")
        if not path.is_file():
            raise BadRequest("apply needs --file with a JSON template (subject, text, html, locale)", field="file")
        template = rt.authoring.save_template(args.name, json.loads(path.read_text()))
        print(f"saved template {template.key}")
    else:
        if not args.profile:
            raise BadRequest("preview needs --profile PROFILE_ID", field="profile")
        _print(rt.authoring.preview(args.name, args.profile))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    deliveries, new = rt.webhook_processor.replay(args.source, after=args.after, trigger_journeys=args.journeys)
    print(f"replayed {deliveries} {args.source} deliveries: {new} new events"
          + ("" if args.journeys else " (journeys not started)"))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def cmd_feeds(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    body = {"segments": args.segment, "formats": args.format, "products": not args.no_products}
    request = rt.feeds.parse_request(body)
    _print(rt.feeds.publish(**request))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    _print(_runtime(args).erasure.erase(args.profile_id))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    rt = _runtime(args)
    scoring = rt.scoring
    if args.action == "list":
        for kind, cls in scoring.enabled().items():
            version = scoring.current_version(cls.name) or "not trained"
            print(f"{kind:<16} {cls.name:<16} {version}")
    elif args.action == "train":
        names = args.names or [c.name for c in scoring.enabled().values()]
        with tqdm(total=1 + 4 * len(names), desc="training", unit=" steps", file=sys.stderr,
                  disable=args.quiet) as bar:
            def step(message: str) -> None:
                bar.set_postfix_str(message)
                bar.update(1)

            cards = scoring.train(names, progress=step)
        for card in cards:
            print(f"{card['name']} {card['version']} ({card['method']}): " + _headline(card["metrics"]))
        return 0 if len(cards) == len(names) else 1
    elif args.action == "score":
        total = sum(len(s["profile_ids"]) for s in scoring.shards(shard_size=args.shard_size))
        with tqdm(total=total, desc="scoring", unit=" customers", file=sys.stderr, disable=args.quiet) as bar:
            report = scoring.run(shard_size=args.shard_size, progress=bar.update, processes=args.processes)
        print(json.dumps(report.as_dict()))
    else:
        if not args.names:
            raise BadRequest("card needs a model name", field="name")
        card = scoring.card(args.names[0], args.version)
        if args.json:
            print(json.dumps(card, indent=2))
        else:
            from chalicelib.services.scoring import card_markdown

            print(card_markdown(card))
    return 0


def _headline(metrics: dict[str, Any]) -> str:
    if "auc" in metrics:
        return f"holdout AUC {metrics['auc']}, Brier {metrics['brier']} (base rate {metrics['brier_baseline']})"
    if "spend" in metrics:
        return f"holdout spend MAE {metrics['spend'].get('mae')} (naive {metrics['spend_naive_baseline'].get('mae')})"
    if "segments" in metrics:
        return f"{len(metrics['segments'])} segments"
    return ", ".join(f"{k} {v}" for k, v in metrics.items() if not isinstance(v, dict | list)) or "no holdout"


def cmd_demo(args: argparse.Namespace) -> int:
    from chalicelib.demo import run_demo

    return run_demo(data_dir=Path(args.data_dir or ".omnicast/demo"), customers=args.customers, seed=args.seed,
                    days=args.days)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnicast", description="Omnicast marketing automation for shops")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--data-dir", help="data folder of the embedded default (default .omnicast)")
        return sp

    sp = add("serve", "run the HTTP API, queue workers and scheduler on the embedded default")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--allow-aws", action="store_true", help="serve locally against the aws adapters")
    sp.set_defaults(func=cmd_serve)

    sp = add("plugins", "list loaded plugins, their versions and hooks")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_plugins)

    sp = add("keys", "create, list or revoke write keys and admin API keys")
    sp.add_argument("action", choices=["create", "list", "revoke"])
    sp.add_argument("--kind", choices=["write", "admin"], default="write")
    sp.add_argument("--name", default="default")
    sp.set_defaults(func=cmd_keys)

    sp = add("webhook-secret", "add, count or remove a shop platform's webhook signing secrets")
    sp.add_argument("action", choices=["add", "list", "remove"])
    sp.add_argument("source", help="shopify, woocommerce, bigcommerce, stripe, ...")
    sp.add_argument("--secret", help="the secret (default: read one line from standard input)")
    sp.set_defaults(func=cmd_webhook_secret)

    sp = add("import", "import customers, orders or products from CSV or JSON Lines (a file or s3://)")
    sp.add_argument("kind", choices=["customers", "orders", "products"])
    sp.add_argument("source", help="a local path or s3://bucket/key")
    sp.add_argument("--format", choices=["csv", "jsonl"], help="default: from the file name")
    sp.add_argument("--report", help="write the rejected rows (row, field, reason) to this CSV file")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_import)

    sp = add("journeys", "list, apply (YAML/JSON), pause, resume, delete or dry-run journeys")
    sp.add_argument("action", choices=["list", "apply", "pause", "resume", "delete", "dry-run"])
    sp.add_argument("target", nargs="?", help="a journey file (apply) or a journey name")
    sp.add_argument("--profile", help="the profile a dry run plays")
    sp.set_defaults(func=cmd_journeys)

    sp = add("segments", "list, apply, preview or sweep segments")
    sp.add_argument("action", choices=["list", "apply", "preview", "sweep"])
    sp.add_argument("target", nargs="?", help="a segment file (apply) or a segment name (preview)")
    sp.set_defaults(func=cmd_segments)

    sp = add("templates", "apply or preview message templates")
    sp.add_argument("action", choices=["apply", "preview"])
    sp.add_argument("name")
    sp.add_argument("--file", help="JSON with subject, text, html, locale (apply)")
    sp.add_argument("--profile", help="render as this profile (preview)")
    sp.set_defaults(func=cmd_templates)

    sp = add("replay", "map a source's kept raw deliveries again (duplicates change nothing)")
    sp.add_argument("source", help="shopify, woocommerce, bigcommerce, stripe, ...")
    sp.add_argument("--after", help="only deliveries whose id sorts after this one")
    sp.add_argument("--journeys", action="store_true", help="let new events start journeys")
    sp.set_defaults(func=cmd_replay)

    sp = add("config", "print the effective configuration")
    sp.set_defaults(func=cmd_config)

    sp = add("feeds", "publish the retargeting feeds (hashed audiences with deltas, product feeds)")
    sp.add_argument("action", choices=["publish"])
    sp.add_argument("--segment", action="append", help="only this segment (repeatable; default: every segment)")
    sp.add_argument("--format", action="append", help="only this audience format (repeatable)")
    sp.add_argument("--no-products", action="store_true", help="audiences only")
    sp.set_defaults(func=cmd_feeds)

    sp = add("erase", "forget a customer (GDPR erasure): identifiers unlinked, personal data removed")
    sp.add_argument("profile_id")
    sp.set_defaults(func=cmd_erase)

    sp = add("models", "train models (time-based split, model cards), score customers, show a model card")
    sp.add_argument("action", choices=["list", "train", "score", "card"])
    sp.add_argument("names", nargs="*", help="model plugin names (train: default every enabled one; card: one)")
    sp.add_argument("--shard-size", type=int, default=5000, help="customers per shard (score)")
    sp.add_argument("--processes", type=int, default=1, help="worker processes (score, local runtime)")
    sp.add_argument("--version", help="a model version (card; default the current one)")
    sp.add_argument("--json", action="store_true", help="the card as JSON")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_models)

    sp = add("demo", "simulate a shop's quarter through the local stack and report what happened")
    sp.add_argument("--customers", type=int, default=400)
    sp.add_argument("--days", type=int, default=90)
    sp.add_argument("--seed", type=int, default=7)
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except OmnicastError as exc:
        print(f"omnicast: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

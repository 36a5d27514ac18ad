"""`thermoscreen dashboards generate|push`: Grafana dashboards as code.

`generate` writes the JSON that Grafana provisions (or, with --check, fails when the
committed JSON is stale); `push` uploads the dashboards to a running Grafana with an API
token from the environment, for installs that do not use provisioning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

_DEFAULT_OUT = Path(__file__).resolve().parent / "generated"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    gen = sub.add_parser("generate", help="write the dashboard JSON files (or check they are current)")
    gen.add_argument("--out", type=Path, default=_DEFAULT_OUT, help="output folder (default: dashboards/generated)")
    gen.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files in --out are stale")
    gen.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    gen.set_defaults(run=_run_generate)

    push = sub.add_parser(
        "push",
        help="upload the dashboards to a running Grafana (token from $GRAFANA_TOKEN)",
        description=(
            "Upload the dashboards to a running Grafana through its HTTP API. The API token (a service "
            "account token with the Editor role) comes from the environment variable GRAFANA_TOKEN; "
            "http://user:password@host:3000 works too when no token is set."
        ),
    )
    push.add_argument("--url", required=True, help="Grafana base URL, e.g. http://localhost:3000")
    push.add_argument(
        "--dir", type=Path, default=None, help="push the .json files of this folder instead of generating"
    )
    push.add_argument("--folder-uid", default="thermoscreen", help="Grafana folder uid (created if missing)")
    push.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout, seconds (default 10)")
    push.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    push.set_defaults(run=_run_push)


def _run_generate(args: argparse.Namespace) -> int:
    from dashboards.generate import stale_files, write

    out: Path = args.out
    if args.check:
        stale = stale_files(out)
        if args.json:
            print(json.dumps({"out": str(out), "stale": stale}))
        if stale:
            print(
                f"thermoscreen dashboards: stale in {out}: {', '.join(stale)} "
                "(run `thermoscreen dashboards generate` and commit the result)",
                file=sys.stderr,
            )
            return 1
        print(f"dashboards in {out} are up to date", file=sys.stderr)
        return 0
    written = write(out)
    if args.json:
        print(json.dumps({"out": str(out), "written": [p.name for p in written]}))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _run_push(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from dashboards.push import TOKEN_ENV, load_dashboards, push

    token = os.environ.get(TOKEN_ENV) or None
    parts = urlsplit(args.url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"--url must be an http(s) URL of a Grafana, got {args.url!r}")
    if token is None and not (parts.username and parts.password):
        raise ValueError(f"set {TOKEN_ENV} to a Grafana API token (or put user:password in --url)")
    dashboards = load_dashboards(args.dir)
    pushed = push(args.url, token, dashboards, folder_uid=args.folder_uid, timeout_s=args.timeout)
    if args.json:
        print(json.dumps({"url": args.url, "folder_uid": args.folder_uid, "dashboards": [p.__dict__ for p in pushed]}))
    for p in pushed:
        print(f"pushed {p.uid} ({p.title}) version {p.version} {p.url or ''}".rstrip(), file=sys.stderr)
    return 0

"""`thermoscreen patients ...` with `forget`: erase one patient from every store the site runs.

Why here: the erasure needs the bridge's stores (cloud_bridge) and the clinic's registry and
audit log (clinic), two runtime packages that may not import each other; the CLI layer may
import both. The order (docs/patients.md):

1. audit line `forget` with status `attempted` (a crash after it still leaves a trace);
2. her session ids from the archive and the queue;
3. tombstones of her ref and sessions, so a running bridge drops her late messages; then a
   wait of the bridge's re-read interval (`erasure_tombstones.REFRESH_S`) plus a margin, so that
   anything of hers a running bridge accepted before it saw the tombstones is already in the
   stores that the next steps erase (without it a message arriving in that second was kept;
   seen once as a failure of the lifecycle test);
4. queue, archive, InfluxDB, Firestore, reports: each on its own, a failure named and the
   rest still done;
5. only when all of them succeeded: her registry entry (last: while it exists, a rerun can
   still be resolved to her by the clinic);
6. audit line with status `completed` or `incomplete` and the counts.

Exit 0 when complete, 1 when a store could not be reached (the rerun completes it; every step
is idempotent), 2 for bad input (no registry, bad REF, unreadable bridge config).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clinic import cli as clinic_cli

#: Beyond the bridge's tombstone re-read interval: an ingest batch that started before the re-read
#: has finished by then (batches take milliseconds; half a second is ample).
TOMBSTONE_MARGIN_S = 0.5
#: Exit status when some store could not be erased (the rerun completes the erasure).
EXIT_INCOMPLETE = 1
NOTICE = "thermoscreen is a screening aid, not a diagnosis; erased records cannot be restored."


def configure(parser: argparse.ArgumentParser) -> None:
    sub = clinic_cli.configure(parser)
    parser.description = (parser.description or "") + " `forget` erases a patient from every store."
    forget = sub.add_parser(
        "forget",
        help="erase a patient from every store (GDPR Art. 17; audited)",
        description=(
            "Erase a patient from the bridge queue and archive, InfluxDB, Firestore, the reports "
            "directory and, last, the registry. Prints a receipt; exits 1 naming the stores it could "
            "not reach (run it again to complete the erasure)."
        ),
    )
    clinic_cli.add_common(forget, key=False)
    forget.add_argument("ref", metavar="REF", help="patient_ref (16 hex)")
    forget.add_argument("--reason", required=True, help="why (goes in the audit log), e.g. 'erasure request 2026-12'")
    forget.add_argument(
        "--bridge-config",
        type=Path,
        required=True,
        action="append",
        help="the bridge's TOML (the one `thermoscreen bridge` reads); several bridges: give each one's",
    )
    forget.add_argument("--reports-dir", type=Path, required=True, help="where HTML reports are written")
    forget.set_defaults(run=run_forget)


def _step(receipt: dict[str, Any], store: str, work: Callable[[], dict[str, int]]) -> None:
    from cloud_bridge.erasure import StoreUnavailableError

    try:
        receipt[store] = {"status": "erased", "removed": work()}
    except StoreUnavailableError as exc:
        receipt[store] = {"status": "failed", "error": exc.reason}


def run_forget(args: argparse.Namespace) -> int:
    from clinic import audit
    from clinic.registry import Registry, parse_ref
    from cloud_bridge import erasure, erasure_tombstones
    from cloud_bridge.config import load_config

    ref = parse_ref(args.ref)
    audit.current_actor(args.actor)
    if not args.reason.strip():
        raise ValueError("--reason: must not be empty")
    configs = [load_config(path) for path in args.bridge_config]
    config = configs[0]
    Registry(args.registry, None).close()  # refuse a wrong path before anything is erased
    log_path = clinic_cli.audit_path(args)
    audit.append(log_path, "forget", actor=args.actor, patient_ref=ref, reason=args.reason,
                 detail={"status": "attempted"})  # fmt: skip
    stores: dict[str, Any] = {}
    sessions: set[str] = set()
    queues = _named("queue", [c.queue.path for c in configs])
    archives = _named("archive", [c.archive.path for c in configs])
    for stores_of_kind, find in ((queues, erasure.sessions_queue), (archives, erasure.sessions_archive)):
        for store, path in stores_of_kind.items():
            try:
                sessions |= find(path, ref)
            except erasure.StoreUnavailableError as exc:
                stores[store] = {"status": "failed", "error": exc.reason}
    tombstones = 0
    for path in dict.fromkeys(c.erasure.tombstones for c in configs):  # every bridge drops her late messages
        tombstones += erasure_tombstones.add(path, ref, sessions)
    time.sleep(erasure_tombstones.REFRESH_S + TOMBSTONE_MARGIN_S)
    for store, path in queues.items():
        if store not in stores:
            _step(stores, store, lambda p=path: erasure.erase_queue(p, ref, sessions))  # type: ignore[misc]
    for store, path in archives.items():
        if store not in stores:
            _step(stores, store, lambda p=path: erasure.erase_archive(p, ref, sessions))  # type: ignore[misc]
    if config.influx.enabled:  # the site's one TSDB and Firestore: the first config names them
        _step(stores, "influx", lambda: erasure.erase_influx(config.influx, config.erasure.influx_api, ref, sessions))
    else:
        stores["influx"] = {"status": "not configured"}
    if config.firestore.enabled:
        _step(stores, "firestore", lambda: erasure.erase_firestore(config.firestore, ref, sessions))
    else:
        stores["firestore"] = {"status": "not configured"}
    _step(stores, "reports", lambda: erasure.erase_reports(args.reports_dir, ref))
    failed = sorted(name for name, s in stores.items() if s["status"] == "failed")
    if failed:
        stores["registry"] = {"status": "kept", "error": "kept until every store is erased"}
    else:
        with Registry(args.registry, None) as registry:
            stores["registry"] = {"status": "erased", "removed": {"patients": registry.forget(ref)}}
    receipt = {
        "patient_ref": ref,
        "complete": not failed,
        "failed": failed,
        "sessions": len(sessions),
        "tombstones_added": tombstones,
        "stores": stores,
    }
    audit.append(
        log_path, "forget", actor=args.actor, patient_ref=ref, reason=args.reason,
        detail={"status": "incomplete" if failed else "completed", "failed": failed, "sessions": len(sessions),
                "removed": {k: v.get("removed", {}) for k, v in stores.items()}},
    )  # fmt: skip
    print(json.dumps(receipt) if args.json else _text(receipt))
    if failed:
        errors = "; ".join(f"{name}: {stores[name]['error']}" for name in failed)
        print(f"thermoscreen patients forget: incomplete: {errors}; run it again to finish", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def _named(store: str, paths: list[Path]) -> dict[str, Path]:
    """One store name per distinct path: `queue` alone, or `queue-1`, `queue-2`, ... for several bridges."""
    distinct = list(dict.fromkeys(paths))
    if len(distinct) == 1:
        return {store: distinct[0]}
    return {f"{store}-{k + 1}": path for k, path in enumerate(distinct)}


def _text(receipt: dict[str, Any]) -> str:
    state = "erased" if receipt["complete"] else "NOT fully erased"
    lines = [f"patient {receipt['patient_ref']}: {state} ({receipt['sessions']} session(s) found)"]
    for name, store in receipt["stores"].items():
        removed = " ".join(f"{k}={v}" for k, v in store.get("removed", {}).items())
        detail = removed if store["status"] == "erased" else store.get("error", "")
        lines.append(f"  {name:<10} {store['status']:<15} {detail}".rstrip())
    lines.append(f"  tombstones {receipt['tombstones_added']} new (the bridge drops her late messages)")
    lines.append(NOTICE)
    return "\n".join(lines)

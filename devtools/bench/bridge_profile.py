"""`python -m devtools.bench.bridge_profile`: the bridge's own per-message cost, profiled on one thread.

Why a replay and not the live process: the bridge runs ingest, three sinks and the session
stage on their own threads, and cProfile sees one thread; on a shared 2-core machine a
live profile also mixes in the scheduler. Here the same objects the bridge builds
(`DurableQueue` with `synchronous=full`, `Ingest` with provenance, the archive and Influx
sinks, the session stage) are driven in turn from one thread: ingest commits a group of
messages, then each sink drains once, then the stage steps. Influx points go to a real
VictoriaMetrics. What is left out is paho's network thread (receiving, acks), which the
live benches (`bench bridge`, `bench e2e`) include.

Prints one JSON object: CPU ms per message (process CPU, so other processes on the machine
do not count), the messages, and the top entries of the profile by own time (with
`--profile FILE`, the full cProfile stats are written for `python -m pstats`).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from cloud_bridge.archive_sink import ArchiveSink
from cloud_bridge.config import InfluxSettings, ProvenanceSettings, SessionSettings
from cloud_bridge.decoded_cache import DecodedCache
from cloud_bridge.durable_queue import DurableQueue, SourceQuota
from cloud_bridge.influx_sink import InfluxSink
from cloud_bridge.ingest import Ingest
from cloud_bridge.service import provenance_gate
from cloud_bridge.session_verdicts import STAGE_NAME, PendingSessionVerdicts
from cloud_bridge.sink import Backoff, SinkWorker
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.synthetic_stream import MODEL_VERSION, make_session
from transport.connection import Message

#: Top profile entries printed in the JSON.
TOP_ENTRIES = 25


def synthetic_messages(devices: int, frames: int) -> list[tuple[str, bytes]]:
    """Sessions of `devices` devices interleaved, as several devices of one site send them."""
    per_device = [list(make_session(f"prof-{i}", frames, seed=i).ordered_messages()) for i in range(devices)]
    return [m for group in zip(*per_device, strict=True) for m in group]


def save_messages(messages: list[tuple[str, bytes]], path: Path) -> None:
    """One JSON line per message (topic, base64 payload): the same input for several runs."""
    with path.open("w", encoding="utf-8") as out:
        for topic, payload in messages:
            out.write(json.dumps([topic, base64.b64encode(payload).decode("ascii")]) + "\n")


def load_messages(path: Path, limit: int | None) -> list[tuple[str, bytes]]:
    """Messages saved by `save_messages`; the first `limit` (all: None)."""
    out: list[tuple[str, bytes]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(out) >= limit:
                break
            topic, data = json.loads(line)
            out.append((topic, base64.b64decode(data)))
    return out


class Pipeline:
    """The bridge's storage path without MQTT: queue, ingest, sinks and session stage on the caller's thread."""

    def __init__(self, workdir: Path, tsdb_url: str | None, *, rows_every: int, batch: int) -> None:
        archive_path = workdir / "archive.sqlite"
        decoded = DecodedCache()
        self.sinks: list[SinkWorker] = []
        archive = ArchiveSink(archive_path, decoded=decoded)
        sinks: list[Any] = [archive]
        if tsdb_url is not None:
            settings = InfluxSettings(enabled=True, url=tsdb_url, frame_rows_every=rows_every)
            sinks.append(InfluxSink(settings, decoded=decoded))
        self.queue = DurableQueue(
            workdir / "queue.sqlite",
            [*(s.name for s in sinks), STAGE_NAME],
            max_items=2_000_000,
            max_bytes=2 * 1024**3,
            quota=SourceQuota(250_000, 256 * 1024**2),
            synchronous="full",
        )
        for sink in sinks:
            self.sinks.append(SinkWorker(sink, self.queue, batch_items=2000, backoff=Backoff(0.2, 1.0)))
        self.stage = PendingSessionVerdicts(
            self.queue,
            SessionSettings(grace_s=0.0),
            archive_path=archive_path,
            archive_sink=archive.name,
            decode=decoded.decode,
        )
        prov = ProvenanceSettings(approved_models=[MODEL_VERSION])
        provenance = self.queue.with_writer(lambda conn: provenance_gate(conn, prov))
        self.ingest = Ingest(
            self.queue,
            component="profile",
            batch=batch,
            publish_deadletter=lambda letter: None,
            decoded=decoded,
            provenance=provenance,
        )
        self.letters = 0

    def feed(self, batch: list[Message]) -> None:
        self.ingest._process(batch)
        for sink in self.sinks:
            while sink.drain_once():
                pass
        while self.stage.step():
            pass

    def close(self) -> None:
        for sink in self.sinks:
            sink.sink.close()
        self.queue.close()


def run(
    messages: list[tuple[str, bytes]], *, batch: int, rows_every: int, tsdb: bool, profile: Path | None, cprofile: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="thermoscreen-bridge-profile-") as tmp:
        workdir = Path(tmp)
        vm = LocalVictoriaMetrics(workdir / "victoria") if tsdb else None
        if vm is not None:
            vm.start()
        try:
            pipeline = Pipeline(workdir, vm.url if vm else None, rows_every=rows_every, batch=batch)
            try:
                profiler = cProfile.Profile()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if cprofile:
                    profiler.enable()
                for start in range(0, len(messages), batch):
                    chunk = messages[start : start + batch]
                    pipeline.feed([Message(t, p, 1, False, start + k + 1) for k, (t, p) in enumerate(chunk)])
                profiler.disable()
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                stats = pipeline.queue.stats()
            finally:
                pipeline.close()
        finally:
            if vm is not None:
                vm.stop()
    if profile is not None and cprofile:
        profiler.dump_stats(str(profile))
    return {
        "messages": len(messages),
        "cpu_ms_per_message": round(1000.0 * cpu / len(messages), 4),
        "wall_ms_per_message": round(1000.0 * wall / len(messages), 4),
        "queue_depth_after": stats.depth,
        "dead_letters": stats.dead,
        "ingest_batch": batch,
        "rows_every": rows_every,
        "tsdb": "VictoriaMetrics" if tsdb else "none",
        "cprofile": cprofile,
        "note": "with cProfile on, Python calls cost about twice as much: compare runs made alike",
        "top_by_own_time": top_entries(profiler, "tottime") if cprofile else [],
    }


def top_entries(profiler: cProfile.Profile, key: str) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(TOP_ENTRIES)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), len(lines))
    return [" ".join(line.split()) for line in lines[start : start + TOP_ENTRIES + 1] if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=4, help="devices, one session each (default 4)")
    parser.add_argument("--frames", type=int, default=500, help="frames per device, each with a verdict (default 500)")
    parser.add_argument("--batch", type=int, default=100, help="messages per ingest commit (default 100)")
    parser.add_argument("--rows-every", type=int, default=8, help="frame_row points every Nth frame (default 8)")
    parser.add_argument("--no-tsdb", dest="tsdb", action="store_false", help="leave the Influx sink out")
    parser.add_argument("--profile", type=Path, help="also write the cProfile stats here")
    parser.add_argument("--save", type=Path, help="write the synthetic messages here and exit")
    parser.add_argument("--load", type=Path, help="replay messages written by --save instead of new ones")
    parser.add_argument("--limit", type=int, help="with --load: only the first N messages")
    parser.add_argument(
        "--no-cprofile", dest="cprofile", action="store_false", help="time it without the profiler (true CPU cost)"
    )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.frames < 1 or args.batch < 1:
        parser.error("--devices, --frames and --batch must be at least 1")
    if args.load is not None:
        messages = load_messages(args.load, args.limit)
    else:
        messages = synthetic_messages(args.devices, args.frames)
    if args.save is not None:
        save_messages(messages, args.save)
        return 0
    result = run(
        messages,
        batch=args.batch,
        rows_every=args.rows_every,
        tsdb=args.tsdb,
        profile=args.profile,
        cprofile=args.cprofile,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

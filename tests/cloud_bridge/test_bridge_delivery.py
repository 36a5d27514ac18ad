"""Against a real Mosquitto and a real VictoriaMetrics: every message lands exactly once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cloud_bridge.archive import Archive
from cloud_bridge.service import Bridge
from devtools.local_mosquitto import LocalMosquitto
from devtools.local_tsdb import LocalVictoriaMetrics
from devtools.synthetic_stream import expected_points, make_session, session_verdict_points
from tests.cloud_bridge.helpers import bridge_config, end_point_active, publish_all, repeated_samples, wait_until
from tests.mqtt_helpers import connect


def test_every_message_lands_exactly_once_and_a_redelivery_only_overwrites_itself(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path
) -> None:
    """Raw counts, not row counts: the archive's rows are keyed, so they cannot show a double write.

    First every message once: received exactly as sent, no archive row written twice and no
    repeated VictoriaMetrics sample but the one the design writes twice per session
    (`end_point_active`). Then one session redelivered (same start, frames and verdicts): rows
    and distinct points unchanged, and exactly the redelivered writes repeated, once each.
    """
    # No periodic metrics: the bridge reads node metrics, its own too, and they would blur the count.
    config = bridge_config(
        bridge_dir, mosquitto.url, influx_url=running_victoria.url, bridge={"metrics_interval_s": 3600.0}
    )
    sessions = [make_session(f"once-{i}", 24, seed=i) for i in range(2)]
    expected = set().union(*(expected_points(s, rows_every=4) | session_verdict_points(s) for s in sessions))
    redelivered = expected_points(sessions[0], rows_every=4, with_end=False)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    try:
        sent = sum(publish_all(publisher, s.ordered_messages()) for s in sessions)
        wait_until(lambda: bridge.summary().received, lambda n: n >= sent + 1, 30.0, f"{sent} messages received")
        assert bridge.wait_idle(30.0)
        once = bridge.summary()
        keys, _ = running_victoria.wait_for_points('{device_id=~"once-.*"}', len(expected))
        repeats = repeated_samples(running_victoria, '{device_id=~"once-.*"}')
        with Archive(config.archive.path) as archive:
            once_counts, once_rewrites = archive.counts(), archive.rewrites()
        again = publish_all(publisher, sessions[0].ordered_messages(with_end=False))
        wait_until(lambda: bridge.summary().received, lambda n: n >= sent + 1 + again, 30.0, "the redelivery")
        assert bridge.wait_idle(30.0)
        summary = bridge.summary()
        repeats_after = wait_until(
            lambda: repeated_samples(running_victoria, '{device_id=~"once-.*"}'),
            lambda r: r.total() >= len(sessions) + len(redelivered),
            30.0,
            "the redelivered samples",
        )
        keys_after, _ = running_victoria.export_keys('{device_id=~"once-.*"}')
    finally:
        publisher.stop()
        bridge.stop()
    # Delivered once each, plus the bridge's own retained online status (it reads node statuses).
    assert once.received == sent + 1 and once.deadletters == 0 and once.dropped == 0 and once.sink_rejected == 0
    by_design = Counter({end_point_active(s): 1 for s in sessions})
    assert keys == expected and repeats == by_design
    assert once_counts == {"sessions": 2, "verdicts": 48, "frames": 48}
    assert once_rewrites == {}, "an archive row was written twice"
    # The redelivery: received, written again over its own rows and points, nothing added.
    assert summary.received == sent + 1 + again and summary.deadletters == 0 and summary.dropped == 0
    assert keys_after == expected and repeats_after == by_design + Counter(redelivered)
    with Archive(config.archive.path) as archive:
        assert archive.counts() == once_counts
        assert archive.rewrites() == {"frames": 24, "verdicts": 24}
        for s in sessions:
            record = archive.session(s.session_id)
            assert record is not None and record.has_verdict and record.frames == 24


def test_tsdb_stopped_mid_run_then_everything_lands(
    mosquitto: LocalMosquitto, running_victoria: LocalVictoriaMetrics, bridge_dir: Path
) -> None:
    """The TSDB is down while devices keep sending. The outage is the shortest that proves it:
    the sink has failed and backed off more than once, the archive kept up, the queue held
    everything with a growing age (all reached in about 1 s here); longer ones only wait
    longer (the fault bench runs 60 s outages)."""
    outage_s = 2.0
    config = bridge_config(bridge_dir, mosquitto.url, influx_url=running_victoria.url)
    before, during = make_session("outage-1", 20, seed=3), make_session("outage-2", 40, seed=4)
    bridge = Bridge(config).start()
    publisher = connect(mosquitto.url)
    try:
        publish_all(publisher, before.ordered_messages())
        assert bridge.wait_idle(30.0)
        running_victoria.stop()
        stopped_at = time.monotonic()
        sent = publish_all(publisher, during.ordered_messages())
        wait_until(bridge.summary, lambda s: s.sink_depth["influx"] >= sent, 30.0, "messages queued")
        # The archive keeps up while the TSDB is down; the Influx sink retries with back-off.
        wait_until(lambda: bridge.summary().sink_errors, lambda n: n >= 2, 30.0, "failed Influx writes")
        held = wait_until(bridge.summary, lambda s: s.sink_depth["archive"] == 0, 10.0, "the archive to keep up")
        assert held.queue_depth >= sent and held.oldest_age_s > 0
        wait_until(time.monotonic, lambda now: now - stopped_at >= outage_s, outage_s + 5, "end of the outage")
        running_victoria.start()
        assert bridge.wait_idle(60.0), bridge.summary()
        summary = bridge.summary()
    finally:
        publisher.stop()
        bridge.stop()
    assert summary.dropped == 0 and summary.sink_rejected == 0
    expected = set().union(*(expected_points(s, rows_every=4) | session_verdict_points(s) for s in (before, during)))
    keys, _ = running_victoria.wait_for_points('{device_id=~"outage-.*"}', len(expected))
    assert keys == expected

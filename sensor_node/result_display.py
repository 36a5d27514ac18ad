"""Showing the session verdict on the device: the patient learns her result from the device itself.

The bridge publishes one `SessionVerdict` per session on `thermo/v1/<device>/session_verdict`,
which only this device's account may read. The device shows it as a line on stderr (the
console the operator watches), in its retained status, and optionally on a GPIO LED and
buzzer through gpiozero (off by default). The wording is that of a screening aid, defined once
in contract.wording: a flagged session means "refer for clinical follow-up", an unflagged one
is "no finding", never "healthy": it does not rule anything out; an inconclusive one asks to
repeat the capture.

In edge mode the device also shows its own result of a session the moment it ends (also
offline), marked provisional: `show_provisional`. The cloud's session verdict for that
session replaces it when it arrives (the status' provisional fields are cleared); a
provisional result for a session the cloud already answered is not shown at all.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from contract.errors import ContractError
from contract.ids import LEGACY_INCARNATION
from contract.messages import ScreeningResult, SessionVerdict, decode_message
from contract.wording import RESULT_SENTENCE, result_of_verdict
from sensor_node.config import ResultSettings

log = logging.getLogger(__name__)

#: The device's line for each result: the one definition in contract.wording.
WORDING = RESULT_SENTENCE


#: How a provisional (on-device) result is introduced, before its WORDING.
PROVISIONAL_NOTE = "provisional on-device result, until the cloud's session verdict arrives"
#: How the cloud's verdict is introduced when it replaces a provisional result shown before.
REPLACES_NOTE = "the cloud's session verdict, replacing the provisional on-device result"
#: Session ids of cloud verdicts remembered, so a late provisional result never overrides one.
_VERDICTED_MEMORY = 256


@dataclass(frozen=True)
class ShownResult:
    session_id: str
    result: ScreeningResult


def result_of(verdict: SessionVerdict) -> ScreeningResult:
    return result_of_verdict(flagged=verdict.flagged, inconclusive=verdict.inconclusive)


class Indicator:
    """The optional LED (lit while a referral is shown) and buzzer (one beep per result)."""

    def __init__(self, settings: ResultSettings, pin_factory: Any = None) -> None:
        self._show_s = settings.show_s
        self._led: Any = None
        self._buzzer: Any = None
        self._timer: threading.Timer | None = None
        if settings.led_pin is None and settings.buzzer_pin is None:
            return
        from gpiozero import LED, Buzzer

        if settings.led_pin is not None:
            self._led = LED(settings.led_pin, pin_factory=pin_factory)
        if settings.buzzer_pin is not None:
            self._buzzer = Buzzer(settings.buzzer_pin, pin_factory=pin_factory)

    def show(self, result: ScreeningResult) -> None:
        if self._buzzer is not None:
            self._buzzer.beep(on_time=0.2, off_time=0.2, n=1 if result is ScreeningResult.NO_FINDING else 3)
        if self._led is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        if result is ScreeningResult.REFER:
            self._led.on()
            self._timer = threading.Timer(self._show_s, self._led.off)
            self._timer.daemon = True
            self._timer.start()
        else:
            self._led.off()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for device in (self._led, self._buzzer):
            if device is not None:
                device.close()


class ResultDisplay:
    """Decodes, checks and shows the session verdicts addressed to this device."""

    def __init__(
        self,
        device_id: str,
        incarnation: str,
        indicator: Indicator,
        on_shown: Callable[[ShownResult], None],
        out: TextIO | None = None,
    ) -> None:
        self._device_id = device_id
        self._incarnation = incarnation
        self._indicator = indicator
        self._on_shown = on_shown
        self._out = out
        self._lock = threading.Lock()
        self._verdicted: OrderedDict[str, None] = OrderedDict()
        #: The latest cloud session verdict shown.
        self.last: ShownResult | None = None
        #: Edge mode: the device's own result of its latest session, until the cloud's verdict for it.
        self.provisional: ShownResult | None = None

    def handle(self, payload: bytes) -> ShownResult | None:
        try:
            verdict = decode_message(payload, SessionVerdict)
        except ContractError as exc:
            log.warning("ignoring a malformed session verdict: %s", exc)
            return None
        if verdict.device_id != self._device_id:
            log.warning("ignoring a session verdict for device %s", verdict.device_id)
            return None
        if verdict.incarnation not in {self._incarnation, LEGACY_INCARNATION}:
            log.info("ignoring a session verdict of an earlier incarnation of this device")
            return None
        shown = ShownResult(verdict.session_id, result_of(verdict))
        with self._lock:
            self._verdicted[shown.session_id] = None
            while len(self._verdicted) > _VERDICTED_MEMORY:
                self._verdicted.popitem(last=False)
            replaces = self.provisional is not None and self.provisional.session_id == shown.session_id
            if replaces:
                self.provisional = None
            self.last = shown
        prefix = f"{REPLACES_NOTE}: " if replaces else ""
        self._print(f"session {verdict.session_id[:8]}: {prefix}{WORDING[shown.result]}")
        self._indicator.show(shown.result)
        self._on_shown(shown)
        return shown

    def show_provisional(self, session_id: str, result: ScreeningResult) -> ShownResult | None:
        """Show the device's own result of a session; None if the cloud's verdict for it came first."""
        shown = ShownResult(session_id, result)
        with self._lock:
            if session_id in self._verdicted:
                return None
            self.provisional = shown
        self._print(f"session {session_id[:8]}: {PROVISIONAL_NOTE}: {WORDING[result]}")
        self._indicator.show(result)
        self._on_shown(shown)
        return shown

    def shown(self) -> tuple[ShownResult | None, ShownResult | None]:
        """(the last cloud verdict, the provisional result), read together."""
        with self._lock:
            return self.last, self.provisional

    def _print(self, text: str) -> None:
        print(f"thermoscreen sensor: {text}", file=self._out or sys.stderr, flush=True)

    def close(self) -> None:
        self._indicator.close()

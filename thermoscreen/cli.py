"""`thermoscreen <job> ...`: argument parsing and one-line errors for every subcommand.

Each job lives in its component's own `cli` module, which exposes `configure(parser)`. That
function adds arguments and sets `run=callable(args) -> int` as a default; heavy imports
(TensorFlow, LiteRT, firebase) happen inside `run`, so `--help` is fast everywhere and the
sensor never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from thermoscreen.logs import LOG_FORMATS, setup_logging

#: (subcommand, module with `configure(parser)`, one-line help)
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("sensor", "sensor_node.cli", "run a screening device: thermal camera + RFID reader -> MQTT"),
    ("infer", "inference_node.cli", "run an inference worker: frames -> LiteRT CNN -> verdicts"),
    ("bridge", "cloud_bridge.cli", "run the cloud bridge: MQTT -> durable queue -> InfluxDB / Firestore"),
    ("report", "thermoscreen.report_cli", "write the HTML screening report: sessions, a patient's history"),
    ("train", "training.cli", "train the thermal or IDC CNN and export .tflite models"),
    ("evaluate", "training.evaluate_cli", "evaluate a thermal .tflite model on a thermogram .npz"),
    ("broker", "broker.cli", "provision the Mosquitto broker: config, certificates, credentials"),
    ("dashboards", "dashboards.cli", "generate Grafana dashboards or push them to a Grafana"),
    ("demo", "devtools.demo_cli", "run the whole system locally with simulated devices"),
    ("bench", "devtools.bench.cli", "benchmarks: sensor, inference, bridge, e2e, faults"),
    ("protocol", "thermoscreen.protocol_cli", "decode or encode MQTT contract v1 payloads"),
    (
        "patients",
        "thermoscreen.forget",
        "the clinic's patient registry: enrol, find, audit, forget (names never leave the site)",
    ),
)

Runner = Callable[[argparse.Namespace], int]


def _unavailable(name: str, reason: str) -> Callable[[argparse.ArgumentParser], None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        def run(args: argparse.Namespace) -> int:
            print(f"thermoscreen {name}: unavailable: {reason}", file=sys.stderr)
            return 2

        parser.set_defaults(run=run)

    return configure


def load_configure(name: str, module_name: str) -> Callable[[argparse.ArgumentParser], None]:
    """The `configure` function of a subcommand module, or a stand-in saying why it is missing."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return _unavailable(name, f"cannot import {module_name}: {exc} (install the matching extra)")
    configure = getattr(module, "configure", None)
    if configure is None:
        return _unavailable(name, f"{module_name} has no configure()")
    return configure  # type: ignore[no-any-return]


def version_line() -> str:
    """Package, contract (protocol, frame and message formats) and shipped-model versions, one line."""
    from importlib.metadata import PackageNotFoundError, version

    from contract import PROTOCOL_VERSION
    from contract.frame import FORMAT_VERSION
    from contract.messages import MESSAGE_VERSION
    from contract.model.shipped import shipped_model_version

    try:
        package = version("thermoscreen")
    except PackageNotFoundError:  # run from a checkout that was never installed
        package = "unknown"
    try:
        model = shipped_model_version()
    except (OSError, ValueError, KeyError) as exc:
        model = f"missing ({_one_line(exc)})"
    return (
        f"thermoscreen {package} contract v{PROTOCOL_VERSION} (frame format {FORMAT_VERSION}, "
        f"message format {MESSAGE_VERSION}) shipped model {model}"
    )


class _VersionAction(argparse.Action):
    """`--version`, computed only when asked (it reads the shipped manifest)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        print(version_line())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thermoscreen",
        description=(
            "thermoscreen: low-cost breast thermal screening. A screening aid, not a diagnosis: "
            "every flagged result needs a clinician's follow-up."
        ),
    )
    parser.add_argument("--version", action=_VersionAction, help="print the package, contract and model versions")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr (-vv: debug)")
    _add_log_format(parser, default=os.environ.get("THERMOSCREEN_LOG_FORMAT", "text"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in SUBCOMMANDS:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Also accepted after the job's name (`thermoscreen bridge --log-format json`).
        _add_log_format(sp, default=argparse.SUPPRESS)
        load_configure(name, module_name)(sp)
    return parser


def _add_log_format(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="log lines on stderr: text, or one JSON object per line (env THERMOSCREEN_LOG_FORMAT)",
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    env_format = os.environ.get("THERMOSCREEN_LOG_FORMAT", "text")
    if env_format not in LOG_FORMATS:
        print(
            f"thermoscreen: error: THERMOSCREEN_LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)},"
            f" got {env_format!r}",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_format, component=args.command)
    run: Runner | None = getattr(args, "run", None)
    if run is None:
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"thermoscreen {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ConnectionError, RuntimeError, LookupError) as exc:
        if os.environ.get("THERMOSCREEN_DEBUG"):
            raise
        print(f"thermoscreen {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def run_main() -> None:
    sys.exit(main())


def not_built(issue: str) -> Callable[[argparse.ArgumentParser], None]:
    """For a job whose component is not built yet: `--help` works, running says so."""

    def configure(parser: argparse.ArgumentParser) -> None:
        def run(args: Any) -> int:
            print(f"thermoscreen {parser.prog.split()[-1]}: not built yet ({issue})", file=sys.stderr)
            return 2

        parser.set_defaults(run=run)

    return configure

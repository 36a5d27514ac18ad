"""Finds a TFLite interpreter without dragging TensorFlow into the worker.

Order: LiteRT (`ai-edge-litert`, the runtime the inference extra installs), then the older
`tflite-runtime`, then TensorFlow's bundled copy as a last resort (a dev machine with only the
train extra). TensorFlow is imported only if neither runtime is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

#: (module, attribute) pairs tried in order; the first that imports wins.
RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow.lite", "Interpreter"),
)

InterpreterFactory = Callable[..., Any]


@cache
def interpreter_factory() -> tuple[InterpreterFactory, str]:
    """The Interpreter class of the first runtime present and the module it came from."""
    missing: list[str] = []
    for module_name, attr in RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name.split(".")[0])
            continue
        factory: InterpreterFactory = getattr(module, attr)
        return factory, module_name
    raise RuntimeError(
        f"no TFLite runtime installed (tried {', '.join(missing)}): pip install 'thermoscreen[inference]'"
    )


_first_interpreter = threading.Lock()
_native_banner_seen = False


@contextlib.contextmanager
def quiet_native_banner() -> Iterator[None]:
    """Hide the runtime's one-time "INFO: Created TensorFlow Lite XNNPACK delegate" line.

    LiteRT prints it from C++ straight to file descriptor 2 on the first interpreter of a
    process, which would break "errors are one line on stderr". Only the first creation is
    wrapped (the runtime prints it once), so later log lines of other threads are never lost.
    """
    global _native_banner_seen
    with _first_interpreter:
        if _native_banner_seen:
            yield
            return
        _native_banner_seen = True
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)

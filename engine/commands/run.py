"""`interlink run`: start the engine and run until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from typing import Any

from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from engine.commands.common import add_config_option, load_or_exit
from engine.logs import json_lines_observer

SWITCH_INTERVAL_S = 0.0005


def register(sub: Any) -> None:
    """Add the `run` subcommand."""
    parser = sub.add_parser("run", help="start the engine")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def _freeze_startup_objects(_: object) -> None:
    """Keep what start-up loaded (code, HL7 tables, compiled channels) out of every later
    garbage collection: a full collection walks the whole heap, and on the reactor thread
    that is tens of milliseconds during which no message is answered."""
    gc.collect()
    gc.freeze()


def handle(args: argparse.Namespace) -> int:
    """Run the engine in the reactor; SIGTERM stops it cleanly via reactor shutdown."""
    config = load_or_exit(args)
    observer = (json_lines_observer(sys.stdout) if config.log_format == "json"
                else textFileLogObserver(sys.stdout))
    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [level])],
                                     redirectStandardIO=False)

    from twisted.internet import reactor

    from engine.service import EngineService

    service = EngineService(config, reactor)
    outcome: dict[str, Any] = {"code": 0}

    def failed_to_start(failure: Any) -> None:
        print(f"interlink: could not start: {failure.getErrorMessage()}", file=sys.stderr)
        outcome["code"] = 1
        reactor.stop()

    def start() -> None:
        service.startService()
        service.ready.addCallbacks(_freeze_startup_objects, failed_to_start)

    def stop() -> defer.Deferred[None]:
        return service.stopService() if service.running else defer.succeed(None)

    # The store writer thread releases the GIL around every SQLite call; with the default
    # 5 ms switch interval each reacquisition can wait a whole interval behind the reactor.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    reactor.suggestThreadPoolSize(4)
    def reload_channels(*_: Any) -> None:
        if service.running and service.deployment is not None:
            defer.ensureDeferred(service.reload()).addErrback(
                lambda f: print(f"interlink: reload failed: {f.type.__name__}",
                                file=sys.stderr))

    # SIGHUP re-reads changed channel files, as operators expect of a daemon.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reload_channels))
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return int(outcome["code"])

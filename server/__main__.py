"""`feedback-server`: run the service (or only migrate its database) until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence

from server.app import create_server
from server.config import Settings, is_loopback, parse_settings
from storage import Storage

log = logging.getLogger("server")


async def serve(settings: Settings) -> None:
    """Serve until a stop signal, then drain gracefully."""
    server, port = await create_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    host = settings.address.rsplit(":", 1)[0]
    log.info(
        "serving",
        extra={
            "address": f"{host}:{port}",
            "port": port,
            "database": server.database_url,
            "auth": settings.auth,
            "redact": settings.redact or "placeholder",
            "text_hash": settings.text_hash,
            "retention": settings.retention or "none",
            "tls": "mtls"
            if settings.tls_client_ca_file
            else "on"
            if settings.tls_cert_file
            else "off",
            "metrics_address": _metrics_address(settings.metrics_address, server.metrics_port),
        },
    )
    _warn_if_exposed(settings)
    await stop.wait()
    log.info("stopping", extra={"grace_seconds": settings.grace_period_seconds})
    await server.stop(settings.grace_period_seconds)
    log.info("stopped")


def _warn_if_exposed(settings: Settings) -> None:
    """Say so when a server reachable from other machines is open, or sends keys in clear."""
    if is_loopback(settings.address):
        return
    if settings.auth == "none":
        log.warning(
            "authentication is off (--auth none) on a non-loopback address: anyone who can reach "
            "the port can read and export everything"
        )
    elif settings.tls_cert_file is None:
        log.warning(
            "API keys travel in clear text: serve TLS (--tls-cert, --tls-key) or terminate TLS "
            "in front of this server"
        )


def _metrics_address(address: str, port: int | None) -> str:
    """Where /metrics is served, with the port it was given ("" when metrics are off)."""
    if port is None:
        return ""
    host = address.rsplit(":", 1)[0]
    return f"{host}:{port}"


def _tls_mode(settings: Settings) -> str:
    if settings.tls_client_ca_file:
        return "mtls"
    return "on" if settings.tls_cert_file else "off"


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed; None means asyncio's default loop."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; using the asyncio event loop")
        return None
    return uvloop.new_event_loop


DONE = {"migrate": "migrated", "rebuild-rollups": "rebuilt rollups", "vacuum": "vacuumed"}
"""The maintenance commands, and the message each logs when it is done."""


def maintain(settings: Settings, command: str) -> None:
    """Run one maintenance command on the database and exit: migrate (bring the schema up to
    date), rebuild-rollups (migrate, then recompute every stats rollup from the raw tables) or
    vacuum (rewrite the database so erased and expired rows leave no bytes in it)."""
    storage = Storage.connect(settings.database_url)
    try:
        started = time.perf_counter()
        if command != "vacuum":
            storage.migrate()
        if command == "rebuild-rollups":
            storage.rebuild_rollups()
        elif command == "vacuum":
            storage.vacuum()
        seconds = round(time.perf_counter() - started, 3)
        log.info(DONE[command], extra={"database": storage.url, "seconds": seconds})
    finally:
        storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `feedback-server` command."""
    from server.logs import configure_logging

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["keys"]:
        from server.key_commands import run_key_command

        configure_logging("WARNING", "text")
        return run_key_command(arguments[1:])
    command, settings = parse_settings(arguments)
    configure_logging(settings.log_level, settings.log_format)
    try:
        if command in DONE:
            maintain(settings, command)
        else:
            with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
                runner.run(serve(settings))
    except Exception:
        log.exception("fatal error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

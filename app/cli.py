"""The `comfyfleet` command. Each room adds its own commands through `register(cli)` in its `cli.py`;
`scripts/` call `main()` here, so there is exactly one implementation of every command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import typer

from app.errors import ComfyfleetError
from app.redact import redact

cli = typer.Typer(
    name="comfyfleet",
    help="Rented Vast.ai GPUs as a Wan 2.2 image-to-video API (simulated world when no VAST_API_KEY).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_ROOMS = (
    "app.workflows.cli",
    "app.vast.cli",
    "app.provision.cli",
    "app.sim.cli",
    "app.store.cli",
    "app.api.cli",
    "app.jobs.cli",
    "app.client.cli",
    "app.migrations.cli",
)


def _register_rooms() -> None:
    import importlib

    for module_name in _ROOMS:
        module = importlib.import_module(module_name)
        module.register(cli)


_register_rooms()


_terminated = False


def _on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM is handled like Ctrl-C: asyncio cancels the command's main task, so its `finally` blocks
    run (stop the simulated world, destroy its instances and record that, cancel a local job) instead
    of the process dying mid-way; a second SIGTERM ends it at once."""
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGINT)


def _sigterm_in_loop(noop: Any) -> None:
    """SIGTERM while a command's event loop runs: hand it to `_on_sigterm` from the loop itself, unless
    the command put its own SIGTERM handler in place (uvicorn's graceful one for `serve`)."""
    if signal.getsignal(signal.SIGTERM) is noop:
        _on_sigterm(signal.SIGTERM, None)


class _SignalWakingPolicy(asyncio.DefaultEventLoopPolicy):
    """Every command's event loop (made by `asyncio.run`) also watches SIGTERM through the loop's wake-up
    fd. Without it a SIGTERM the kernel delivers to a worker thread (the database's, a `to_thread`
    executor's) sets only a flag, and an idle loop blocked in `epoll_wait` (a world waiting to be stopped,
    a 30 s sampling step) does not run the Python handler until something else wakes it, so the command
    ignored SIGTERM for as long as it stayed idle."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, lambda: _sigterm_in_loop(noop))
                noop = signal.getsignal(signal.SIGTERM)  # the loop's own (a no-op; the fd wakes it)
        return loop


def install_signal_handling() -> None:
    """SIGTERM ends a command as Ctrl-C does (`_on_sigterm`); `serve` (uvicorn) installs its own one.

    SIGTERM is handed on as SIGINT, whose handler asyncio installs only when SIGINT has Python's default
    handler. A process started with SIGINT ignored (a shell's `comfyfleet sim &`, a test runner's worker)
    inherits SIG_IGN, so the handover did nothing and the command ignored SIGTERM: restore the handler."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    asyncio.set_event_loop_policy(_SignalWakingPolicy())


def root_command() -> Any:
    """The click command tree, with every option's help and default shown (`app.cli_help`)."""
    from app.cli_help import polish

    return polish(typer.main.get_command(cli))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: typed errors become a one-line message and exit code 2, never a traceback."""
    # asyncssh's process.redirect leaves this harmless warning behind when channels close.
    warnings.filterwarnings("ignore", message="coroutine 'Queue.join' was never awaited")
    install_signal_handling()
    try:
        root_command().main(args=list(argv) if argv is not None else None, standalone_mode=True)
    except ComfyfleetError as exc:
        typer.secho(f"error: {redact(str(exc))}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except SystemExit as exc:
        if _terminated and exc.code != 0:  # Typer turns the interrupt into exit 130: say what happened
            typer.secho("terminated (SIGTERM); stopped cleanly", err=True)
            sys.exit(143)
        raise
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

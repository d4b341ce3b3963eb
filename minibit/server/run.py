"""``serve()``: run the app on uvicorn (the ``minibit serve`` command is minibit/cli/serve.py).

``serve`` binds the socket itself (so port 0 picks a free port and ``on_listen`` names the
real one) and hands the socket to uvicorn, which stops gracefully on SIGINT/SIGTERM: it
stops accepting, lets the requests in flight finish for up to ``shutdown_timeout`` seconds,
then cancels them and the worker stops.  A second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import socket

from .._errors import FormatError

__all__ = ["serve", "missing_extra", "model_name"]

def missing_extra() -> str | None:
    """The first package of the 'server' extra that is not installed, or None."""
    for name in ("starlette", "uvicorn", "pydantic"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def serve(model, host: str = "127.0.0.1", port: int = 8080, *, model_id: str = "demo",
          slots: int = 4, ctx: int | None = None, max_queue: int = 64,
          shutdown_timeout: float = 5.0, log_level: str = "warning", access_log: bool = False,
          on_listen=None) -> None:
    """Serve ``model`` until SIGINT/SIGTERM (see create_app for slots, ctx, max_queue).

    on_listen(url) is called once the socket listens (connections made from then on wait
    in its backlog until uvicorn accepts them).  Raises FormatError when the address cannot
    be bound.  After a signal uvicorn re-raises it once shut down, so SIGINT ends in
    KeyboardInterrupt and SIGTERM in the default action.
    """
    import uvicorn

    from .app import create_app

    app = create_app(model, model_id=model_id, slots=slots, ctx=ctx, max_queue=max_queue)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise FormatError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=shutdown_timeout, lifespan="on")
    server = uvicorn.Server(config)
    if on_listen is not None:
        on_listen(f"http://{f'[{host}]' if ':' in host else host}:{port}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def model_name(source: str) -> str:
    """The id a served model gets: "demo", or the file or directory name of its source."""
    if source == "demo":
        return "demo"
    base = os.path.basename(os.path.normpath(source))
    return base or source

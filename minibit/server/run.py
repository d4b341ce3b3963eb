"""``serve()``: run the app on uvicorn; and the ``minibit serve`` command around it.

The command is self-contained: ``add_serve_parser(subparsers)`` adds it to an argparse
subparsers object (``run_serve(args)`` runs it), ``main(argv)`` runs it from a plain argv
list.  It loads the model once, binds the socket itself (so ``--port 0`` picks a free port
and the line it prints names the real one) and hands the socket to uvicorn, which stops
gracefully on SIGINT/SIGTERM: it stops accepting, lets the requests in flight finish for
up to ``--shutdown-timeout`` seconds, then cancels them and the worker stops.  A second
Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from .._errors import FormatError

__all__ = ["serve", "add_arguments", "add_serve_parser", "run_serve", "main", "model_name"]

DESCRIPTION = ("Serve a model over an OpenAI-compatible HTTP API (/v1/completions, "
               "/v1/chat/completions, /v1/models), with /health and a chat page at /.")
EXAMPLES = """examples:
  minibit serve                                   the bundled model on http://127.0.0.1:8080
  minibit serve --model DIR --port 8000 --ctx 2048
  curl http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \\
       -d '{"model": "demo", "prompt": "It was", "max_tokens": 20, "temperature": 0}'
"""


def _missing_extra() -> str | None:
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


def _positive(kind, name):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}")
        return v
    return parse


def _port(text):
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be an integer in [0, 65535], got {text!r}")
    return v


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="demo",
                    help="'demo' (bundled), a HF snapshot directory, a .gguf file or a cached repo id")
    ap.add_argument("--alias", default=None, help="the model's name in the API (default: 'demo' or "
                                                  "the file or directory name)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: "
                                                        "this machine only; there is no authentication)")
    ap.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0: any free port)")
    ap.add_argument("--profile", choices=["hf", "bitnet.cpp", "llama.cpp"], default=None,
                    help="numerics to reproduce (default: the model's natural one)")
    ap.add_argument("--threads", type=_positive(int, "--threads"), default=None,
                    help="kernel threads (default: all cores)")
    ap.add_argument("--ctx", type=_positive(int, "--ctx"), default=None,
                    help="tokens of context per request, prompt + completion (default and "
                         "maximum: the model's)")
    ap.add_argument("--kv-cache", choices=["f32", "f16"], default="f32", help="KV cache type")
    ap.add_argument("--slots", type=_positive(int, "--slots"), default=4,
                    help="generations running at once, taking turns token by token (default 4; "
                         "each holds one KV cache)")
    ap.add_argument("--max-queue", type=_positive(int, "--max-queue"), default=64,
                    help="requests that may wait for a slot; more get 503 (default 64)")
    ap.add_argument("--shutdown-timeout", type=_positive(float, "--shutdown-timeout"), default=5.0,
                    help="seconds requests in flight get to finish after SIGINT/SIGTERM (default 5)")
    ap.add_argument("--verbose", action="store_true", help="uvicorn's log, one line per request")


def run_serve(args) -> int:
    """Run ``minibit serve`` from parsed arguments (add_arguments)."""
    missing = _missing_extra()
    if missing:
        raise FormatError(f"serving needs the 'server' extra ({missing} is not installed): "
                          f"pip install 'minibit[server]'")
    from .. import backend, load

    model = load(args.model, profile=args.profile, threads=args.threads)
    model.kv_cache = args.kv_cache
    name = args.alias or model_name(args.model)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"minibit serve: warning: listening on {args.host}: anyone who can reach it can use "
              f"the model (there is no authentication)", file=sys.stderr)
    ctx = model.config.max_position if args.ctx is None else min(args.ctx, model.config.max_position)

    def announce(url):
        print(f"minibit serve: model {name!r} ({backend()} backend, context {ctx}, "
              f"{args.slots} slots) on {url}/  (API: {url}/v1, chat page: {url}/; Ctrl-C stops)",
              file=sys.stderr, flush=True)

    try:
        serve(model, args.host, args.port, model_id=name, slots=args.slots, ctx=args.ctx,
              max_queue=args.max_queue, shutdown_timeout=args.shutdown_timeout,
              log_level="info" if args.verbose else "warning", access_log=args.verbose,
              on_listen=announce)
    except KeyboardInterrupt:    # SIGINT, re-raised by uvicorn after its graceful shutdown
        print("minibit serve: stopped", file=sys.stderr, flush=True)
        return 130
    return 0


def add_serve_parser(subparsers):
    """``minibit serve`` on an argparse subparsers object; the parser's ``func`` is run_serve."""
    p = subparsers.add_parser("serve", help="an OpenAI-compatible HTTP server with a chat page",
                              description=DESCRIPTION, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run_serve)
    return p


def main(argv, parser_class=argparse.ArgumentParser) -> int:
    """``minibit serve ARGS`` from an argv list (the part after "serve")."""
    ap = parser_class(prog="minibit serve", description=DESCRIPTION, epilog=EXAMPLES,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run_serve(ap.parse_args(argv))

"""``minibit serve``: the model behind an OpenAI-compatible HTTP API and a chat page.

The server itself is minibit/server/ (needs the ``server`` extra); this module only parses
the command line, loads the model once and calls ``minibit.server.run.serve``.
"""

from __future__ import annotations

import ipaddress
import sys

from .._errors import FormatError
from ._common import KV_CHOICES, PROFILE_CHOICES, Parser, number

HELP = "an OpenAI-compatible HTTP server with a chat page"

DESCRIPTION = ("Serve a model over an OpenAI-compatible HTTP API (/v1/completions, "
               "/v1/chat/completions, /v1/models), with /health and a chat page at /.")
EXAMPLES = """examples:
  minibit serve                                   the bundled model on http://127.0.0.1:8080
  minibit serve --model DIR --port 8000 --ctx 2048
  curl http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \\
       -d '{"model": "demo", "prompt": "It was", "max_tokens": 20, "temperature": 0}'
"""


def _positive(kind, name):
    return number(kind, name, lambda v: v > 0, "a positive number")


def parser() -> Parser:
    ap = Parser(prog="minibit serve", description=DESCRIPTION, epilog=EXAMPLES)
    ap.add_argument("--model", default="demo",
                    help="'demo' (bundled), a HF snapshot directory, a .gguf file or a cached repo id")
    ap.add_argument("--alias", default=None, help="the model's name in the API (default: 'demo' or "
                                                  "the file or directory name)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: "
                                                        "this machine only; there is no authentication)")
    ap.add_argument("--port", default=8080, help="port (default 8080; 0: any free port)",
                    type=number(int, "--port", lambda v: 0 <= v <= 65535, "an integer in [0, 65535]"))
    ap.add_argument("--profile", choices=PROFILE_CHOICES, default=None,
                    help="numerics to reproduce (default: the model's natural one)")
    ap.add_argument("--threads", type=_positive(int, "--threads"), default=None,
                    help="kernel threads (default: all cores)")
    ap.add_argument("--ctx", type=_positive(int, "--ctx"), default=None,
                    help="tokens of context per request, prompt + completion (default and "
                         "maximum: the model's)")
    ap.add_argument("--kv-cache", choices=KV_CHOICES, default="f32", help="KV cache type")
    ap.add_argument("--slots", type=_positive(int, "--slots"), default=4,
                    help="generations running at once, taking turns token by token (default 4; "
                         "each holds one KV cache)")
    ap.add_argument("--max-queue", type=_positive(int, "--max-queue"), default=64,
                    help="requests that may wait for a slot; more get 503 (default 64)")
    ap.add_argument("--shutdown-timeout", type=_positive(float, "--shutdown-timeout"), default=5.0,
                    help="seconds requests in flight get to finish after SIGINT/SIGTERM (default 5)")
    ap.add_argument("--verbose", action="store_true", help="uvicorn's log, one line per request")
    return ap


def main(argv) -> int:
    args = parser().parse_args(argv)
    from ..server.run import missing_extra, model_name, serve
    missing = missing_extra()
    if missing:
        raise FormatError(f"serving needs the 'server' extra ({missing} is not installed): "
                          f"pip install 'minibit[server]'")
    from .._backend import backend
    from ._common import load_model

    model = load_model(args)
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

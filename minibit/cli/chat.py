"""``minibit chat``: a conversation through the model's chat template, one message a line."""

from __future__ import annotations

import sys

from ._common import load_model, model_args
from .generate import stream

HELP = "chat through the model's template"


DESCRIPTION = ("Chat with a model through its chat template. Type a message per line; an "
               "empty line or EOF ends.")


def add_arguments(ap) -> None:
    ap.add_argument("--system", default=None, help="a system message")
    model_args(ap)


def run(args, ap) -> int:
    model = load_model(args)
    from ..generate import render_chat
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        messages.append({"role": "user", "content": line.strip()})
        if not interactive:
            sys.stdout.write(f"> {line.strip()}\n")
        res = stream(model, render_chat(model, messages), args)
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": res.text.strip()})

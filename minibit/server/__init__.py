"""``minibit serve``: an OpenAI-compatible local server with a chat page.

    from minibit.server import create_app, serve
    serve(minibit.load("demo"), "127.0.0.1", 8080)      # blocks until SIGINT/SIGTERM
    app = create_app(model, model_id="demo")           # the ASGI app, for any ASGI server

Needs the optional ``server`` extra (``pip install 'minibit[server]'``): Starlette for the
routes, uvicorn to serve them, pydantic for the request schemas.  Why these: Starlette is
the small, well-kept ASGI toolkit FastAPI is built on; minibit needs six routes and a
custom streaming response, not FastAPI's dependency injection or OpenAPI pages, and its
error bodies must be OpenAI's, not FastAPI's ``{"detail": ...}``.  Server-sent events are
one ``data: ...`` line per chunk, written directly instead of through sse-starlette.
uvicorn is the reference ASGI server, with graceful SIGINT/SIGTERM handling.

Modules: scheduler (the worker thread, the queue and the slots; standard library only),
schemas (request validation), app (the routes), run (serve() on uvicorn); the command is
minibit/cli/serve.py.
"""

__all__ = ["create_app", "serve"]


def create_app(model, **kw):
    """The Starlette app serving ``model``; see minibit.server.app.create_app."""
    from .app import create_app as _create
    return _create(model, **kw)


def serve(model, host="127.0.0.1", port=8080, **kw):
    """Serve ``model`` until SIGINT/SIGTERM; see minibit.server.run.serve."""
    from .run import serve as _serve
    return _serve(model, host, port, **kw)

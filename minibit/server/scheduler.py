"""One model, many requests: a worker thread that runs every generation, in turns.

The model is not thread-safe, so exactly one thread (the worker) ever calls it.  Requests
are ``Job``\\ s.  A job waits in a first-come, first-served queue until one of ``slots``
places is free; the admitted jobs then take turns, one step each (a step is one ``next()``
on the job's ``Model.generate(..., stream=True)`` iterator, which decodes one token, or a
few when a piece of text is held back for UTF-8 or a possible stop string).  A short
request admitted beside a long one therefore finishes early instead of waiting for it.

Each job runs ``model.generate`` with its own KV cache and its own seeded sampler, exactly
as a lone call would, so taking turns changes no job's text.  Every admitted job holds one
KV cache of at most ``prompt + max_new_tokens`` positions: ``slots`` bounds that memory.

The web side lives on an asyncio event loop in another thread.  The worker hands each
event ("piece", "done", "error") to the job's ``asyncio.Queue`` through
``loop.call_soon_threadsafe``; the web side calls ``Job.cancel()`` (thread-safe) when its
client goes away, and the worker drops the job before its next step: its slot is free
after at most one more token.  The event loop never waits for the worker, so a long
generation cannot delay ``/health``.

This module needs only the standard library.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading

from ..generate import GenerationResult

__all__ = ["Job", "Scheduler", "QueueFull", "ShuttingDown"]


class QueueFull(Exception):
    """The waiting queue already holds ``max_queue`` jobs."""


class ShuttingDown(Exception):
    """The scheduler was stopped; it takes no new jobs."""


_ids = itertools.count(1)


class Job:
    """One generation: ``model.generate(prompt, stream=True, **kwargs)`` run by the worker.

    Consume it on the event loop that created it with ``async for kind, value in job``:
    ``("piece", str)`` for each text piece, then one ``("done", GenerationResult)`` or
    ``("error", Exception)``.  A cancelled job ends its iteration without a final event.
    """

    def __init__(self, prompt: str, kwargs: dict, loop: asyncio.AbstractEventLoop | None = None):
        self.id = next(_ids)
        self.prompt = prompt
        self.kwargs = dict(kwargs)
        self.result = GenerationResult(text="")
        self.loop = loop or asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()
        self._scheduler: Scheduler | None = None
        self.finished = False        # set by the worker before it posts "done" or "error"

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop this job (from any thread): it leaves the queue at once, or its slot before
        its next step.  Harmless after it finished."""
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        self._post(("cancelled", None))
        if self._scheduler is not None and not self.finished:
            self._scheduler._cancelled(self)

    def _post(self, event) -> None:
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:         # the event loop is closed: nobody is listening any more
            pass

    def __aiter__(self):
        return self

    async def __anext__(self):
        kind, value = await self._events.get()
        if kind == "cancelled":
            raise StopAsyncIteration
        if kind in ("done", "error"):
            self._post(("cancelled", None))      # the next __anext__ ends the iteration
        return kind, value


class Scheduler:
    """The worker thread, its FIFO queue and its ``slots`` turn-taking places.

    ``submit(job)`` queues a job (QueueFull past ``max_queue`` waiting jobs, ShuttingDown
    after ``stop()``).  ``stats()`` says how many jobs are active and queued, and counts
    the submitted ones and how they ended: completed, failed, or cancelled (counted when
    ``cancel()`` is called, e.g. when the client disconnected; the job's slot is free once
    it is no longer active).  ``wait_until(pred)`` blocks until ``pred(stats())`` holds
    (tests use it instead of sleeping).
    """

    def __init__(self, model, slots: int = 4, max_queue: int = 64):
        if slots < 1 or max_queue < 0:
            raise ValueError(f"slots must be >= 1 and max_queue >= 0, got {slots}, {max_queue}")
        self.model = model
        self.slots = slots
        self.max_queue = max_queue
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[tuple[Job, object]] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._counts = collections.Counter()
        self._thread: threading.Thread | None = None

    # -- the web side ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="minibit-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every job, end the worker and wait for it (at most ``timeout`` s)."""
        with self._cv:
            self._stopping = True
            jobs = list(self._waiting) + [j for j, _ in self._active]
            self._cv.notify_all()
        for job in jobs:
            job.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue and len(self._active) >= self.slots:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            job._scheduler = self
            self._waiting.append(job)
            self._counts["submitted"] += 1
            self._cv.notify_all()

    def stats(self) -> dict:
        with self._cv:
            return self._stats()

    def _stats(self) -> dict:
        c = self._counts
        return {"slots": self.slots, "active": len(self._active), "queued": len(self._waiting),
                "submitted": c["submitted"], "completed": c["completed"],
                "cancelled": c["cancelled"], "failed": c["failed"]}

    def wait_until(self, pred, timeout: float = 10.0) -> bool:
        """Block until pred(stats()) is true; False if ``timeout`` seconds pass first."""
        with self._cv:
            return self._cv.wait_for(lambda: pred(self._stats()), timeout)

    def _cancelled(self, job: Job) -> None:
        """A job was cancelled: it leaves the queue now (an active one: at the worker's next
        turn, after the token being computed, if any)."""
        with self._cv:
            self._counts["cancelled"] += 1
            try:
                self._waiting.remove(job)
            except ValueError:
                pass
            self._cv.notify_all()

    # -- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._active:
                    self._cv.wait()
                if self._stopping and not self._active:
                    return
                while self._waiting and len(self._active) < self.slots:
                    job = self._waiting.popleft()
                    self._active.append((job, None))
                    self._cv.notify_all()
                turn = list(self._active)
            for job, pieces in turn:
                self._step(job, pieces)

    def _step(self, job: Job, pieces) -> None:
        """One turn of one job: start it, or take its next piece, or retire it.  A finished
        job is retired (no longer active, counted) before its last event is posted, so a
        client that has its answer never sees its job in stats()."""
        final = None
        try:
            if job.cancelled:
                outcome = "dropped"  # counted as "cancelled" when cancel() was called
            elif pieces is None:     # admitted on this turn: build its iterator (no decoding yet)
                pieces = self.model.generate(job.prompt, stream=True, result=job.result, **job.kwargs)
                self._replace(job, pieces)
                return
            else:
                try:
                    piece = next(pieces)
                except StopIteration:
                    outcome, final = "completed", ("done", job.result)
                else:
                    job._post(("piece", piece))
                    return
        except Exception as e:       # a bad request that slipped through, or a bug: this job only
            outcome, final = "failed", ("error", e)
        if pieces is not None:
            pieces.close()           # runs the generators' cleanup; frees the KV cache
        job.finished = final is not None
        self._retire(job, outcome)
        if final is not None:
            job._post(final)

    def _replace(self, job, pieces) -> None:
        with self._cv:
            self._active = [(j, pieces if j is job else p) for j, p in self._active]

    def _retire(self, job, outcome: str) -> None:
        with self._cv:
            self._active = [(j, p) for j, p in self._active if j is not job]
            if outcome != "dropped":
                self._counts[outcome] += 1
            self._cv.notify_all()

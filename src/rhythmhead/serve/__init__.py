"""``rhythmhead serve``: the generation server — a web page for people and an HTTP API for programs.

* :mod:`rhythmhead.serve.jobs` — :class:`~rhythmhead.serve.jobs.JobManager`: checked submissions, a bounded queue, a
  worker pool sharing one loaded pipeline, progress, per-job JPEG frame buffers, cancellation, expiry.
* :mod:`rhythmhead.serve.api` — ``create_app(manager, ...)``: the FastAPI app of the ``/v1`` HTTP API.
* :mod:`rhythmhead.serve.web` — the web page at ``/`` (``mount(app, manager)``).
* :mod:`rhythmhead.serve.cli` — the ``rhythmhead serve`` command (models loaded once, uvicorn).
* :mod:`rhythmhead.serve.local` — a uvicorn server in a thread on a free port (tests and ``rhythmhead bench serve``).
"""

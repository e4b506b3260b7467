"""``srdeploy serve``: the upscaler as an HTTP service (see docs/serve.md).

How a request travels, one module per step:

* ``app``: the ASGI application (Starlette, in the ``serve`` extra): routes, bearer token,
  upload limit, disconnect watch, the page (``page``) and ``/metrics`` (``metrics``).
* ``service``: what a request does, on a worker thread and without HTTP: options, header checks
  (413/415/400 before decoding), a memory reservation, decode, ``Upscaler``, encode.
* ``ledger``: the shared memory budget (``--max-memory``) requests reserve before decoding.
* ``scheduler``: one thread that runs every request's tiles, batched across requests
  (``--max-batch``, ``--batch-wait-ms``), as Triton's dynamic batcher does.
* ``ray_app``: the same application as a Ray Serve deployment (``--ray``), replicas opened from
  the picklable ``SessionRecipe``.

Nothing here imports Starlette, uvicorn or Ray at import time: the runtime (and
``srdeploy --help``) work without the ``serve`` and ``cluster`` extras.
"""

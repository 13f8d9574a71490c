"""The segment service (`gpuclust serve`): a fitted model behind HTTP, with its fast per-request path.

    events.py    request bodies -> event columns (the strict reading of the canonical columns)
    fastpath.py  predict() for a few users on small arrays; several requests in one pass
    batcher.py   micro-batching of concurrent requests
    state.py     the model being served: loaded, verified, tried, swapped whole on reload
    metrics.py   Prometheus text: requests, latency, batches, cluster shares, drift
    app.py       the FastAPI routes, bearer tokens, limits and one-line errors
    server.py    uvicorn with every wait bounded: listening, slow clients, shutdown
"""

"""``faceembed serve``: the HTTP service (FastAPI + uvicorn) over a store of collections; see
:func:`faceembed.serve.app.create_app` and :func:`faceembed.serve.run.serve`."""

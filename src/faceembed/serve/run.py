"""Running the service: uvicorn with one process, or ``workers`` processes that share the store (each keeps its
in-memory index current through the store's change counter before every search)."""

from __future__ import annotations

import os

from faceembed.errors import FaceembedError
from faceembed.serve.app import ENV_PREFIX


def serve(db_url: str, model: str | None = None, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_upload_mb: float = 20, thumbnails_dir: str | None = None, log_level: str = "info") -> None:
    """Serve the store at ``db_url`` on ``host:port`` until interrupted. The store is opened (and its schema made)
    once here first, so that a bad URL is one clear error before any worker starts."""
    import uvicorn

    from faceembed.store import open_store

    if workers < 1:
        raise FaceembedError(f"--workers must be at least 1, not {workers}")
    if max_upload_mb <= 0:
        raise FaceembedError(f"--max-upload-mb must be positive, not {max_upload_mb:g}")
    if not 0 <= port <= 65535:
        raise FaceembedError(f"--port must be 0..65535, not {port}")
    open_store(db_url).close()
    env = {"DB": db_url, "MODEL": model or "", "MAX_UPLOAD_MB": str(max_upload_mb), "THUMBNAILS": thumbnails_dir or ""}
    for name, value in env.items():
        os.environ[ENV_PREFIX + name] = value
    uvicorn.run("faceembed.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=10)

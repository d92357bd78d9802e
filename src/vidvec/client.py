"""``vidvec.Client``: the service (``vidvec serve``) from Python.

    client = vidvec.Client("http://127.0.0.1:8000", token="...")
    job = client.submit("clip.mp4", model="clip_vit_b32")          # an upload; path=... for a server-side file
    arrays = client.result(client.wait(job["id"])["id"])            # features, timestamps, video_vector, ...
    found = client.search(text="a dog catches a frisbee", k=5)

Errors the server answers are :class:`ClientError` with its status and one-line message.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np


class ClientError(Exception):
    """The server refused a request: ``status`` (HTTP) and its one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Client:
    """A vidvec service at ``url``, with a bearer ``token``."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        import httpx

        self._http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                  timeout=timeout)

    def _call(self, method: str, path: str, **kwargs):
        answer = self._http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            try:
                message = answer.json().get("error") or answer.text
            except ValueError:
                message = answer.text
            raise ClientError(answer.status_code, message)
        return answer

    def submit(self, video: str | os.PathLike | None = None, model: str = "efficientnet_lite0", *,
               path: str | None = None, idempotency_key: str | None = None) -> dict:
        """A job for ``video`` (a local file, uploaded) or ``path`` (a file under the server's roots)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if (video is None) == (path is None):
            raise ValueError("give a video file to upload or a server-side path")
        if path is not None:
            return self._call("POST", "/v1/jobs", json={"path": path, "model": model}, headers=headers).json()
        with open(video, "rb") as f:
            return self._call("POST", "/v1/jobs", files={"file": (Path(video).name, f)}, data={"model": model},
                              headers=headers).json()

    def status(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, timeout: float = 3600.0, every: float = 0.25) -> dict:
        """The job once done or failed (TimeoutError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if job["status"] in ("done", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:.0f} s")
            time.sleep(every)

    def result(self, job_id: str) -> dict[str, np.ndarray]:
        """A done job's arrays (as ``vidvec.read_features`` gives them, without the provenance)."""
        data = self._call("GET", f"/v1/jobs/{job_id}/result").content
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files if name != "provenance"}

    def search(self, text: str | None = None, *, like_clip: str | None = None, like_job: str | None = None,
               k: int = 10, model: str | None = None) -> dict:
        """The clips and videos of the server's store nearest a sentence, a stored clip or a done job's video."""
        query = {"text": text, "like_clip": like_clip, "like_job": like_job, "k": k, "model": model}
        return self._call("POST", "/v1/search", json={k_: v for k_, v in query.items() if v is not None}).json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

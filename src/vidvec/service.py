"""``vidvec serve``: the latent-vectors service over HTTP (FastAPI, run by uvicorn).

A client sends a video (an upload, streamed to disk as it arrives, or a path under the server's roots) for one
of the served models and gets a job; the job table (:mod:`vidvec.jobs`, SQLite) is committed before the answer,
so an accepted job is never lost: a restarted server queues again what its predecessor left running. The
:class:`Worker` decodes jobs' videos in threads and runs every served model (loaded once) over them in one thread,
clips of concurrent jobs sharing batches; each job writes to ``DATA/results/<job>/`` what ``vidvec extract``
writes. A search asks the store (:class:`vidvec.Store`) by sentence (the served model's text tower), by a stored
clip or by a done job's video.

Each request, accepted job and finished job is one JSON line on the ``vidvec.service`` logger (stderr with
``vidvec serve``). Every endpoint but ``/healthz`` wants ``Authorization: Bearer <token>`` with a token of the
tokens file (401, nothing more, otherwise). Errors are JSON ``{"error": "..."}`` with one line: no stack trace,
no server path.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import queue
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.responses import Response

from .jobs import Job, JobTable
from .store import Store, StoreError

log = logging.getLogger(__name__)
MODELS_LOADING_WAIT_S = 120.0  # a text search that comes while the served models load waits this long for them


def _log(event: str, **fields: object) -> None:
    """One structured log line (JSON) of the service."""
    log.info(json.dumps({"event": event, "time": round(time.time(), 3), **fields}))


@dataclass(frozen=True)
class ServiceConfig:
    """What a server serves: its models (with their weights, None: the default entry), the data folder (jobs,
    uploads, results), the bearer tokens, the store searched (None: no search), the folders server-side paths may
    name, the limits (upload bytes, video seconds read from the header before any decoding, queued or running jobs
    per token) and the batching across jobs (clips per model call, the longest a partial batch waits)."""

    models: tuple[str, ...]
    data: Path
    tokens: tuple[str, ...]
    weights: tuple[str | None, ...] = ()
    store: Path | None = None
    roots: tuple[Path, ...] = ()
    max_upload_bytes: int = 2 << 30
    max_seconds: float = 3600.0
    max_jobs_per_token: int = 16
    device: str = "cpu"
    extract_options: dict[str, Any] = field(default_factory=dict)  # e.g. sampling, for every job
    batch_size: int | None = None  # clips per model call (None: each model's default on the device)
    max_wait_ms: float = 20.0  # a partial batch waits at most this long for clips of other jobs
    decoders: int = 2  # videos decoded at once

    def weights_of(self, model: str) -> str | None:
        return dict(zip(self.models, self.weights)).get(model)


class ServiceError(Exception):
    """A request that cannot be served: its HTTP status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ErrorBody(BaseModel):
    """What every refusal answers: one line."""

    error: str


_REFUSALS = {400: "A body that cannot be parsed", 401: "No or a wrong token", 403: "A path this server does not read",
             404: "Nothing of that name here",
             409: "The job is not done", 413: "An upload over the size limit", 422: "A request that is not one",
             429: "Too many jobs for this token", 503: "The served models are still loading"}


def _refusals(*codes: int) -> dict:
    """The refusals a route can answer (every route: 401 and 422), for its OpenAPI schema."""
    return {code: {"model": ErrorBody, "description": _REFUSALS[code]} for code in (401, 422, *codes)}


class JobView(BaseModel):
    """A job as a client sees it."""

    id: str
    model: str
    video: str = Field(description="The name the client gave the video (an upload's file name, or its path).")
    status: str = Field(description="queued, running, done or failed")
    reason: str | None = None
    clips: int | None = None
    created: float
    updated: float

class PathJob(BaseModel):
    """A job for a video the server reads by path."""

    path: str = Field(description="A video file under one of the server's roots.")
    model: str

class SearchQuery(BaseModel):
    """A search: a sentence or a stored clip, and how many clips and videos."""

    text: str | None = Field(None, description="A sentence, through the model's text tower.")
    like_clip: str | None = Field(None, description="A stored clip, VIDEO@SECONDS.")
    like_job: str | None = Field(None, description="A done job of yours: its video vector.")
    k: int = Field(10, ge=1, le=1000)
    model: str | None = None


class Worker:
    """Runs the queued jobs: ``decoders`` threads each take a job and decode its video (the events a local decode
    worker sends) into one bounded queue; one thread runs every served model over that queue with the runner a
    local run uses, so clips of concurrent jobs share batches. When nothing arrives for ``max_wait_ms`` the runner
    computes the partial batches it holds. Each result is written and recorded by the job's own run (its sink and
    ledger under ``DATA/results/<job>``), then the job table updated. The models load once, when the worker
    starts."""

    def __init__(self, config: ServiceConfig, table: JobTable, on_finished) -> None:
        self.config, self.table, self.on_finished = config, table, on_finished
        self.loaded: dict[str, Any] = {}
        self.ready = threading.Event()  # the models are loaded
        self._events: queue.Queue = queue.Queue(maxsize=64)
        self._jobs: dict[int, tuple[Job, Any]] = {}  # runner's video index -> (job, its run)
        self._next = itertools.count()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._decoders = [threading.Thread(target=self._decode_loop, name=f"vidvec-decode-{i}", daemon=True)
                          for i in range(config.decoders)]
        self._model = threading.Thread(target=self._model_loop, name="vidvec-model", daemon=True)

    def start(self) -> None:
        self._model.start()
        for thread in self._decoders:
            thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Take no new job; finish the videos being decoded and computed (a job still running after ``timeout``
        is queued again at the next start)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in [*self._decoders, self._model]:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- decoding ------------------------------------------------------------------------------------------
    def _decode_loop(self) -> None:
        from .local import job_events

        self.ready.wait()
        while not self._stop.is_set():
            job = self.table.take()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            prepared = self._prepare(job)
            if prepared is None:
                continue
            index, run, slot = prepared
            self._jobs[index] = (job, run)
            for event in job_events((index, run.sources[0], (slot,)), self._slots, threads=1, group=self._group):
                self._events.put(event)

    def _prepare(self, job: Job):
        """The job's run (its output folder bound) and its place in the runner's stream; None (the job failed,
        with its reason) when it cannot run."""
        from .extraction import ExtractError, Extraction, specify
        from .ledger import LedgerError

        try:
            _check_length(job.video, self.config.max_seconds)  # again: the limit may have changed since
            spec, sources, execution = specify([job.video], job.model, self.config.data / "results" / job.id,
                                               weights=self.config.weights_of(job.model), num_workers=0,
                                               device=self.config.device, **self.config.extract_options)
            run = Extraction.from_spec(spec, sources, execution, overwrite=True)
        except (ServiceError, ExtractError, LedgerError, OSError, ValueError) as error:
            self.table.fail(job.id, _one_line(error, job))
            self.on_finished("failed")
            _log("job", id=job.id, model=job.model, status="failed", clips=0,
                 seconds=round(time.time() - job.created, 3))
            return None
        return next(self._next), run, self.config.models.index(job.model)

    # -- the models ----------------------------------------------------------------------------------------
    def _model_loop(self) -> None:
        from .clips import Slot
        from .extraction import plan_one
        from .runner import ModelOptions, ModelRunner, default_batch_size

        # each served model as a run plans it (its settings, its weights), loaded once
        specs = [plan_one(name, self.config.weights_of(name), self.config.extract_options.get("sampling"))
                 for name in self.config.models]
        loaded = [spec.load(self.config.device) for spec in specs]
        self.loaded = dict(zip(self.config.models, loaded))
        self._slots = [Slot(m.sampling, m.preprocess, m.input == "audio") for m in specs]
        device = self.config.device.split(":")[0]
        self._group = self.config.batch_size or max(default_batch_size(m.input, device) for m in specs)
        runner = ModelRunner(loaded, ModelOptions(batch_size=self.config.batch_size, device=self.config.device,
                                                  normalize=tuple(m.normalize for m in specs)))
        self.ready.set()
        for result in runner.run(self._stream()):
            job, run = self._jobs.pop(result.index)
            outcome = run.record(dataclasses.replace(result, index=0, slot=0))
            run.close()
            if outcome.status == "done":
                self.table.finish(job.id, str(outcome.output), outcome.result.clips)
            else:
                self.table.fail(job.id, _one_line(outcome.reason or "failed", job))
            self.on_finished(outcome.status)
            _log("job", id=job.id, model=job.model, status=outcome.status, clips=result.clips,
                 seconds=round(time.time() - job.created, 3))

    def _stream(self):
        """The decode side's events as they come; a Flush when none came for the maximum wait; the end once the
        worker stops and the decode side has sent everything."""
        from .runner import Flush

        wait = self.config.max_wait_ms / 1000
        while True:
            try:
                yield self._events.get(timeout=wait)
            except queue.Empty:
                if self._stop.is_set() and not any(t.is_alive() for t in self._decoders) and not self._jobs:
                    return
                yield Flush()


def _one_line(error: object, job: Job) -> str:
    """A reason as the client may see it: the first line, with the server's path of the video as its name."""
    return str(error).splitlines()[0].replace(job.video, job.name) if str(error) else "failed"


def create_app(config: ServiceConfig):
    """The FastAPI application for ``config`` (its worker starts and stops with the application)."""
    from contextlib import asynccontextmanager

    table = JobTable(config.data / "jobs.sqlite")
    store = None if config.store is None else Store(config.store)  # one: what search reads stays in memory
    registry = CollectorRegistry()
    submitted = Counter("vidvec_jobs_submitted", "Jobs accepted", registry=registry)
    finished = Counter("vidvec_jobs_finished", "Jobs finished", ["status"], registry=registry)
    latency = Histogram("vidvec_request_seconds", "Request time", ["route"], registry=registry)
    worker = Worker(config, table, lambda status: finished.labels(status).inc())
    tokens = tuple(config.tokens)

    @asynccontextmanager
    async def lifespan(_app):
        table.requeue_running()
        worker.start()
        yield
        worker.stop()
        table.close()

    app = FastAPI(title="vidvec", version=_version(), lifespan=lifespan,
                  description="Latent vectors of videos: jobs per video and model, and search in a vector store.")

    @app.exception_handler(ServiceError)
    async def _service_error(_request, error: ServiceError):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, error: StarletteHTTPException):  # FastAPI's own (an unparsable body, no such route)
        return JSONResponse({"error": str(error.detail).splitlines()[0]}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, error: RequestValidationError):  # one line, as every other refusal
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, error: Exception):  # never a stack trace or a path to the client
        _log("internal error", route=request.url.path,
             traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)))
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.middleware("http")
    async def _timed(request: Request, call_next):
        began = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")  # the template: no ids or paths in logs
        spent = time.perf_counter() - began
        latency.labels(route).observe(spent)
        _log("request", method=request.method, route=route, status=response.status_code, ms=round(spent * 1000, 1))
        return response

    def token_of(request: Request) -> str:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and any(secrets.compare_digest(value.strip(), t) for t in tokens):
            return value.strip()
        raise ServiceError(401, "unauthorized")

    def view(job: Job) -> JobView:
        return JobView(id=job.id, model=job.model, video=job.name, status=job.status, reason=job.reason,
                       clips=job.clips, created=job.created, updated=job.updated)

    def check_model(model: str) -> None:
        if model not in config.models:
            raise ServiceError(404, f"model {model!r} is not served here; served: {', '.join(config.models)}")

    def admit(token: str, key: str | None) -> Job | None:
        """The job an idempotency key already names, else None once the token may add one more."""
        if key is not None:
            earlier = table.earlier(token, key)
            if earlier is not None:
                return earlier
        if table.active(token) >= config.max_jobs_per_token:
            raise ServiceError(429, f"this token has {config.max_jobs_per_token} jobs queued or running already")
        return None

    def accepted(token: str, model: str, video: str, name: str, key: str | None) -> JSONResponse:
        _check_length(video, config.max_seconds)
        job, new = table.add(token, model, video, name, key)
        if new:
            submitted.inc()
            worker.wake()
            _log("accepted", id=job.id, model=model)
        return JSONResponse(view(job).model_dump(), status_code=202 if new else 200)

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the served models and how many jobs are in each state (no token needed)."""
        return {"status": "ok", "models": list(config.models), "jobs": table.counts()}

    @app.get("/metrics", responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"},
                                    **_refusals()}, response_class=Response)
    def metrics(_token: str = Depends(token_of)) -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/jobs", status_code=202, response_model=JobView, responses={
        200: {"model": JobView, "description": "The job an earlier request with the same Idempotency-Key made"},
        **_refusals(400, 403, 404, 413, 429)},
        openapi_extra={"requestBody": {"content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file", "model"], "properties": {
                "file": {"type": "string", "format": "binary"}, "model": {"type": "string"}}}},
            "application/json": {"schema": PathJob.model_json_schema()}}, "required": True}})
    async def submit(request: Request, token: str = Depends(token_of)):
        """A job for one video and one model: an upload (multipart ``file`` and ``model``) or a path under the
        server's roots (JSON ``{"path", "model"}``). ``Idempotency-Key`` makes a retry return the first job."""
        key = request.headers.get("idempotency-key")
        earlier = admit(token, key)
        if earlier is not None:
            return JSONResponse(view(earlier).model_dump(), status_code=200)
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json"):
            try:
                asked = PathJob.model_validate_json(await _body(request, 64 << 10))
            except ValueError:
                raise ServiceError(422, 'send JSON {"path": ..., "model": ...}') from None
            check_model(asked.model)
            return accepted(token, asked.model, str(_under_roots(asked.path, config.roots)), asked.path, key)
        if not kind.startswith("multipart/form-data"):
            raise ServiceError(422, "send the video as multipart/form-data (file, model) or a path as JSON")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_upload_bytes + (64 << 10):
            raise ServiceError(413, f"the upload is over {config.max_upload_bytes} bytes")
        upload, fields = await _receive(request, kind, config.data / "uploads", config.max_upload_bytes)
        model = fields.get("model")
        if upload is None or model is None:
            if upload is not None:
                upload[0].unlink(missing_ok=True)
            raise ServiceError(422, "send the video as the multipart field 'file' and the model as 'model'")
        try:
            check_model(model)
            return accepted(token, model, str(upload[0]), upload[1], key)
        except ServiceError:
            upload[0].unlink(missing_ok=True)
            raise

    def own(job_id: str, token: str) -> Job:
        job = table.get(job_id)
        if job is None or not secrets.compare_digest(job.token, token):
            raise ServiceError(404, f"no job {job_id}")
        return job

    @app.get("/v1/jobs/{job_id}", response_model=JobView, responses=_refusals(404))
    def status(job_id: str, token: str = Depends(token_of)):
        """A job's state."""
        return view(own(job_id, token))

    @app.get("/v1/jobs/{job_id}/result", responses={
        200: {"content": {"application/octet-stream": {}, "application/json": {}},
              "description": "The npz vidvec writes, or its arrays as JSON with ?format=json"},
        **_refusals(404, 409)})
    def result(job_id: str, format: str = "npz", token: str = Depends(token_of)):
        """A done job's vectors: the npz file ``vidvec extract`` writes (``?format=json``: its arrays as JSON)."""
        job = own(job_id, token)
        if job.status != "done":
            raise ServiceError(409, f"job {job_id} is {job.status}" + (f": {job.reason}" if job.reason else ""))
        if format == "json":
            from .writers import read_features

            arrays, provenance = read_features(Path(job.result))
            return {"id": job.id, "model": job.model, "arrays": {k: v.tolist() for k, v in arrays.items()},
                    "provenance": {k: v for k, v in provenance.items() if k in ("model", "settings_hash", "weights",
                                                                               "sampling", "clips", "vidvec_version")}}
        if format != "npz":
            raise ServiceError(422, f"format is npz or json, not {format!r}")
        return FileResponse(job.result, media_type="application/octet-stream", filename=f"{job.id}.npz")

    @app.post("/v1/search", responses=_refusals(400, 404, 409, 503))
    def search(query: SearchQuery, token: str = Depends(token_of)) -> dict:
        """The k clips and videos of the server's store nearest a sentence, a stored clip or a done job's video."""
        job = None
        if query.like_job is not None:
            job = own(query.like_job, token)
            if job.status != "done":
                raise ServiceError(409, f"job {job.id} is {job.status}")
        return _search(config, store, worker, query, job)

    @app.get("/v1/thumbnail", responses={200: {"content": {"image/jpeg": {}}, "description": "The frame"},
                                          **_refusals(404)}, response_class=Response)
    def thumbnail(video: str, t: float, _token: str = Depends(token_of)):
        """The frame of a stored video at ``t`` seconds, as a JPEG (decoded by vidvec)."""
        from .searchpage import jpeg_at

        if store is None:
            raise ServiceError(404, "this server has no store")
        try:
            picture = jpeg_at(store.source_of(video), t)
        except StoreError as error:
            raise ServiceError(404, str(error).replace(str(config.store), "the store")) from None
        if picture is None:
            raise ServiceError(404, f"no frame of {video} at {t:g} s")
        return Response(picture, media_type="image/jpeg")

    @app.get("/", response_class=Response, include_in_schema=False)
    def page():
        """The search page."""
        return Response((Path(__file__).parent / "data" / "search.html").read_text(encoding="utf-8"),
                        media_type="text/html")

    return app


def _search(config: ServiceConfig, store: Store | None, worker: Worker, query: SearchQuery, job: Job | None) -> dict:
    if store is None:
        raise ServiceError(404, "this server has no store to search")
    if sum(q is not None for q in (query.text, query.like_clip, query.like_job)) != 1:
        raise ServiceError(422, "give one of text, like_clip or like_job")
    try:
        name = store.model_name(query.model)
        if query.text is not None:
            if name not in config.models:
                raise ServiceError(422, f"the store's {name} vectors need {name}'s text tower, which this server "
                                        f"does not serve")
            vector = _encode_text(worker, name, query.text)
        elif job is not None:
            from .writers import read_features

            arrays, provenance = read_features(Path(job.result))
            if job.model != name or provenance.get("settings_hash") != store.manifest()["models"][name][
                    "settings_hash"]:
                raise ServiceError(422, f"job {job.id}'s {job.model} vectors were made with other settings than the "
                                        f"store's {name} vectors")
            vector = arrays["video_vector"]
        else:
            video, _, at = query.like_clip.rpartition("@")
            try:
                vector = store.vector_of(video, float(at.rstrip("s")), name)
            except ValueError:
                raise ServiceError(422, f"like_clip is VIDEO@SECONDS, not {query.like_clip!r}") from None
        clips, videos = store.search(vector, query.k, name)
    except StoreError as error:
        raise ServiceError(404, str(error).replace(str(config.store), "the store")) from None

    def hit(h) -> dict:
        return {"video": h.video, "clip": h.clip, "start": h.start, "end": h.end, "score": h.score}

    return {"model": name, "clips": [hit(h) for h in clips],
            "videos": [{"video": v.video, "score": v.score, "best": hit(v.best)} for v in videos]}


def _encode_text(worker: Worker, model: str, text: str):
    """``text`` through the served ``model``'s text tower (once the worker has loaded it: the same weights, random
    ones included, as the vectors it computes)."""
    import torch

    from .registry import get_card

    if not get_card(model).text:
        raise ServiceError(422, f"model {model} has no text encoder")
    if not worker.ready.wait(MODELS_LOADING_WAIT_S):
        raise ServiceError(503, "the models are still loading: try again shortly")
    with torch.inference_mode():
        return worker.loaded[model].module.encode_text([text]).float().cpu().numpy()[0]


async def _body(request, limit: int) -> bytes:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ServiceError(413, f"the request body is over {limit} bytes")
    return data


async def _receive(request, content_type: str, folder: Path, limit: int) -> tuple[tuple[Path, str] | None, dict]:
    """Stream a multipart body: the ``file`` part to a new file in ``folder`` (413 past ``limit`` bytes, the file
    removed), the other fields (small) in memory. Returns ((path, the client's file name) or None, fields)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ServiceError(422, "a multipart body needs its boundary")
    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "file": None, "size": 0,
                             "fields": {}, "upload": None}

    def on_part_begin() -> None:
        state.update(headers={}, name=None, value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["headers"][state["field"].lower()] = state["headers"].get(state["field"].lower(), b"") + \
            data[start:end]

    def on_header_end() -> None:
        state["field"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        if state["name"] == "file":
            filename = os.path.basename(disposition.get(b"filename", b"upload").decode("utf-8", "replace"))
            path = folder / f"{secrets.token_hex(8)}{Path(filename).suffix[:16]}"
            state["file"] = open(path, "wb")
            state["upload"] = (path, filename or "upload")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == "file":
            state["size"] += end - start
            if state["size"] > limit:
                raise ServiceError(413, f"the upload is over {limit} bytes")
            state["file"].write(data[start:end])
        else:
            state["value"] += data[start:end]
            if len(state["value"]) > 4096:
                raise ServiceError(422, f"the field {state['name']!r} is too long")

    def on_part_end() -> None:
        if state["name"] == "file":
            state["file"].close()
        elif state["name"]:
            state["fields"][state["name"]] = state["value"].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Exception as error:
        if state["file"] is not None:
            state["file"].close()
            state["upload"][0].unlink(missing_ok=True)
        if isinstance(error, ServiceError):
            raise
        raise ServiceError(422, "not a readable multipart body") from None
    return state["upload"], state["fields"]


def _check_length(video: str, max_seconds: float) -> None:
    """422 for a video whose header says it lasts longer than the server takes (read from the header alone); a
    header that cannot be read is the job's to fail, with the reason a run gives."""
    from .decode import DecodeError, header_duration

    try:
        seconds = header_duration(video)
    except (DecodeError, OSError, ValueError):
        return
    if seconds > max_seconds:
        raise ServiceError(422, f"the video lasts {seconds:.0f} s, more than this server takes ({max_seconds:.0f} s)")


def _under_roots(path: str, roots: tuple[Path, ...]) -> Path:
    """``path`` resolved (symlinks followed) when it is a file inside one of ``roots``; 403 otherwise, without
    saying which roots there are."""
    resolved = Path(os.path.realpath(path))
    inside = any(resolved.is_relative_to(Path(os.path.realpath(root))) for root in roots)
    if not inside or ".." in Path(path).parts or not os.path.isabs(path):
        raise ServiceError(403, "that path is not one this server reads")
    if not resolved.is_file():
        raise ServiceError(404, "no such video file")
    return resolved


def read_tokens(path: Path) -> tuple[str, ...]:
    """The bearer tokens of a file, one per line (blank lines and # comments left out)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    tokens = tuple(line for line in lines if line and not line.startswith("#"))
    if not tokens:
        raise ValueError(f"{path} holds no token")
    return tokens


def _version() -> str:
    from . import __version__

    return __version__


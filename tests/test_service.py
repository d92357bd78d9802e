"""vidvec serve as a real process on 127.0.0.1: bearer tokens, jobs by upload or by path under the roots, results
equal to `vidvec extract`'s, idempotency keys, limits (413, 429), one-line errors without server paths, a job
that survives kill -9 of the server, search in a store, metrics."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import media
import vidvec
from vidvec.extraction import SamplingOverrides

pytestmark = pytest.mark.slow
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VIDEO = "v_SoccerJuggling_g23_c01.avi"


class Server:
    """``vidvec serve`` in a process of its own, on a free loopback port."""

    def __init__(self, root: Path, *options: str) -> None:
        self.root, self.options = root, options
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "tokens.txt").write_text(f"# tokens\n{TOKEN}\nanother\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "vidvec"), "serve", "-m", "efficientnet_lite0", "--tokens",
             str(self.root / "tokens.txt"), "--data", str(self.root / "data"), "--port", str(self.port), "--fps", "1",
             *self.options], stdout=open(self.root / "server.log", "a"), stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not start: {(self.root / 'server.log').read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)

    def wait_for(self, job: str, states=("done", "failed"), timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = httpx.get(f"{self.url}/v1/jobs/{job}", headers=AUTH, timeout=10).json()
            if seen["status"] in states:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"job {job} still {seen['status']} after {timeout} s")


@pytest.fixture(scope="module")
def roots(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("roots")
    (root / "videos").mkdir()
    shutil.copy(shared_dir / "assets" / "videos" / VIDEO, root / "videos" / VIDEO)
    (root / "videos" / "escape.mp4").symlink_to(shared_dir / "assets" / "videos" / "R6llTwEh07w.mp4")
    return root


@pytest.fixture(scope="module")
def expected(roots):
    (outcome,) = vidvec.extract([roots / "videos" / VIDEO], num_workers=0, sampling=SamplingOverrides(fps=1.0))
    return outcome.result.arrays


@pytest.fixture
def server(tmp_path, roots):
    running = Server(tmp_path, "--root", str(roots / "videos"), "--max-upload-mb", "1", "--max-jobs-per-token",
                     "3").start()
    yield running
    running.stop()


def _upload(server: Server, path: Path, headers: dict | None = None, model: str = "efficientnet_lite0"):
    with open(path, "rb") as f:
        return httpx.post(f"{server.url}/v1/jobs", headers={**AUTH, **(headers or {})}, timeout=60,
                          files={"file": (path.name, f, "video/x-msvideo")}, data={"model": model})


def test_tokens_on_every_endpoint_but_healthz(server):
    assert httpx.get(f"{server.url}/healthz").json()["models"] == ["efficientnet_lite0"]
    for method, path in (("GET", "/v1/jobs/x"), ("POST", "/v1/jobs"), ("GET", "/metrics"), ("POST", "/v1/search"),
                         ("GET", "/v1/jobs/x/result")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = httpx.request(method, server.url + path, headers=headers)
            assert answer.status_code == 401 and answer.json() == {"error": "unauthorized"}, (path, headers)


def test_an_upload_gives_the_vectors_vidvec_extract_gives(server, roots, expected):
    answer = _upload(server, roots / "videos" / VIDEO)
    assert answer.status_code == 202 and answer.json()["video"] == VIDEO
    job = server.wait_for(answer.json()["id"])
    assert job["status"] == "done" and job["clips"] == len(expected["features"])
    npz = httpx.get(f"{server.url}/v1/jobs/{job['id']}/result", headers=AUTH)
    path = server.root / "result.npz"
    path.write_bytes(npz.content)
    arrays, provenance = vidvec.read_features(path)
    np.testing.assert_allclose(arrays["features"], expected["features"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(arrays["timestamps"], expected["timestamps"])
    as_json = httpx.get(f"{server.url}/v1/jobs/{job['id']}/result?format=json", headers=AUTH).json()
    np.testing.assert_allclose(as_json["arrays"]["video_vector"], expected["video_vector"], rtol=1e-5, atol=1e-6)
    other = httpx.get(f"{server.url}/v1/jobs/{job['id']}", headers={"Authorization": "Bearer another"})
    assert other.status_code == 404  # another token's job is not yours to see


def test_a_retried_upload_with_the_same_idempotency_key_is_one_job(server, roots):
    first = _upload(server, roots / "videos" / VIDEO, {"Idempotency-Key": "k1"})
    again = _upload(server, roots / "videos" / VIDEO, {"Idempotency-Key": "k1"})
    assert first.status_code == 202 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    server.wait_for(first.json()["id"])
    assert sum(httpx.get(f"{server.url}/healthz").json()["jobs"].values()) == 1


def test_paths_only_under_the_roots(server, roots, tmp_path):
    def by_path(path: str):
        return httpx.post(f"{server.url}/v1/jobs", headers=AUTH, json={"path": path, "model": "efficientnet_lite0"})

    good = by_path(str(roots / "videos" / VIDEO))
    assert good.status_code == 202 and server.wait_for(good.json()["id"])["status"] == "done"
    for path in ("/etc/hostname", str(roots / "videos" / ".." / "videos" / VIDEO), str(roots / "videos" /
                 "escape.mp4"), f"videos/{VIDEO}"):
        refused = by_path(path)
        assert refused.status_code == 403 and refused.json() == {"error": "that path is not one this server reads"}
    assert by_path(str(roots / "videos" / "nothing.mp4")).status_code == 404


def test_limits_and_bad_input_are_one_line_without_server_paths(server, roots, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 << 20))
    answer = _upload(server, big)
    assert answer.status_code == 413 and "over 1048576 bytes" in answer.json()["error"]
    uploads = server.root / "data" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())  # nothing of it kept
    unknown = _upload(server, roots / "videos" / VIDEO, model="resnet9000")
    assert unknown.status_code == 404 and unknown.json()["error"] == ("model 'resnet9000' is not served here; "
                                                                      "served: efficientnet_lite0")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 5000)
    job = server.wait_for(_upload(server, broken).json()["id"])
    assert job["status"] == "failed" and job["reason"] == "cannot open: Invalid data found when processing input"
    refused = httpx.get(f"{server.url}/v1/jobs/{job['id']}/result", headers=AUTH)
    assert refused.status_code == 409 and refused.json()["error"].startswith(f"job {job['id']} is failed")
    assert httpx.post(f"{server.url}/v1/jobs", headers=AUTH, content=b"x").status_code == 422


def test_a_video_over_the_length_limit_is_refused_from_its_header(tmp_path, roots):
    server = Server(tmp_path, "--root", str(roots / "videos"), "--max-minutes", "0.05").start()  # 3 s
    try:
        answer = _upload(server, roots / "videos" / VIDEO)  # 8.2 s
        assert answer.status_code == 422 and answer.json() == {
            "error": "the video lasts 8 s, more than this server takes (3 s)"}
        assert not any((server.root / "data" / "uploads").iterdir())
        by_path = httpx.post(f"{server.url}/v1/jobs", headers=AUTH, json={"path": str(roots / "videos" / VIDEO),
                                                                          "model": "efficientnet_lite0"})
        assert by_path.status_code == 422 and httpx.get(f"{server.url}/healthz").json()["jobs"]["queued"] == 0
    finally:
        server.stop()


def test_a_token_has_at_most_its_share_of_jobs(server, roots):
    answers = [_upload(server, roots / "videos" / VIDEO) for _ in range(6)]
    codes = [a.status_code for a in answers]
    assert 429 in codes and codes.count(202) >= 3, codes
    assert answers[codes.index(429)].json()["error"] == "this token has 3 jobs queued or running already"


def _a_running_job(tmp_path: Path) -> tuple[Server, dict, Path]:
    """A server running a job of a 60 s video (60 clips at 1 fps): the server, the job, the video."""
    long = tmp_path / "long.mp4"
    media.make_video(long, frames=600, fps=10, size=(320, 240))
    server = Server(tmp_path, "--root", str(tmp_path)).start()
    job = httpx.post(f"{server.url}/v1/jobs", headers=AUTH, json={"path": str(long),
                                                                  "model": "efficientnet_lite0"}).json()
    server.wait_for(job["id"], states=("running",))
    return server, job, long


def test_a_job_survives_kill_9_of_the_server(tmp_path):
    server, job, long = _a_running_job(tmp_path)
    try:
        server.stop(signal.SIGKILL)
        server.start()  # the same data folder: the job is queued again and run
        assert server.wait_for(job["id"])["status"] == "done"
        npz = tmp_path / "result.npz"
        npz.write_bytes(httpx.get(f"{server.url}/v1/jobs/{job['id']}/result", headers=AUTH).content)
    finally:
        server.stop()
    (outcome,) = vidvec.extract([long], num_workers=0, sampling=SamplingOverrides(fps=1.0))
    result, _ = vidvec.read_features(npz)
    np.testing.assert_allclose(result["features"], outcome.result.arrays["features"], rtol=1e-5, atol=1e-6)


def test_search_and_metrics(tmp_path, roots):
    feats = tmp_path / "feats"
    list(vidvec.extract([roots / "videos" / VIDEO], out=feats, num_workers=0, sampling=SamplingOverrides(fps=1.0)))
    vidvec.Store(tmp_path / "store").index(feats)
    server = Server(tmp_path, "--store", str(tmp_path / "store")).start()
    try:
        found = httpx.post(f"{server.url}/v1/search", headers=AUTH, json={"like_clip": f"{Path(VIDEO).stem}@2.5",
                                                                          "k": 2}).json()
        assert found["clips"][0]["start"] == 2.0 and found["clips"][0]["score"] == pytest.approx(1.0)
        assert found["videos"][0]["video"] == Path(VIDEO).stem
        text = httpx.post(f"{server.url}/v1/search", headers=AUTH, json={"text": "a ball", "k": 2})
        assert text.status_code == 422 and text.json() == {"error": "model efficientnet_lite0 has no text encoder"}
        missing = httpx.post(f"{server.url}/v1/search", headers=AUTH, json={"like_clip": "nope@1"})
        assert missing.status_code == 404 and str(tmp_path) not in missing.text
        metrics = httpx.get(f"{server.url}/metrics", headers=AUTH).text
        assert "vidvec_request_seconds_count" in metrics and "vidvec_jobs_submitted_total 0.0" in metrics
    finally:
        server.stop()
    logged = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")]
    assert {"event": "request", "method": "POST", "route": "/v1/search", "status": 422} in [
        {k: line[k] for k in ("event", "method", "route", "status")} for line in logged if line["event"] == "request"]


def test_sigterm_finishes_the_running_job(tmp_path):
    from vidvec.jobs import JobTable

    server, job, _ = _a_running_job(tmp_path)
    server.stop(signal.SIGTERM)
    assert server.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    table = JobTable(tmp_path / "data" / "jobs.sqlite")
    try:
        finished = table.get(job["id"])
    finally:
        table.close()
    assert finished.status == "done" and finished.clips == 60


def test_the_search_page_in_a_browser(tmp_path, roots):
    """The page at / driven in headless Chromium (selenium, Debian's chromium-driver), server and browser in a
    network namespace of their own: a sentence typed and searched (CLIP's text tower), then a video given to the
    page (sent as a job, then searched like it): both show their clips with thumbnails; a wrong token, the refusal."""
    feats = tmp_path / "feats"
    list(vidvec.extract([roots / "videos" / VIDEO], "clip_vit_b32", feats, weights="random", num_workers=0,
                        sampling=SamplingOverrides(fps=1.0)))
    vidvec.Store(tmp_path / "store").index(feats)
    (tmp_path / "tokens.txt").write_text(TOKEN)
    script = tmp_path / "page.py"
    script.write_text(f"""
import json, subprocess, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
server = subprocess.Popen([{str(Path(sys.executable).parent / "vidvec")!r}, "serve", "-m", "clip_vit_b32",
                           "--weights", "random", "--tokens", {str(tmp_path / "tokens.txt")!r}, "--data",
                           {str(tmp_path / "data")!r}, "--store", {str(tmp_path / "store")!r}, "--port", "8123",
                           "--fps", "1"])
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir={tmp_path / 'p'}"):
    options.add_argument(flag)
browser = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
browser.set_page_load_timeout(60)

def shown():
    state = WebDriverWait(browser, 120).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute(
        "data-state"))
    time.sleep(1)  # the thumbnails come after the results
    figures = browser.find_elements(By.CSS_SELECTOR, "#clips figure")
    return {{"state": state, "status": browser.find_element(By.ID, "status").text, "figures": len(figures),
            "loaded": sum(f.get_attribute("data-loaded") == "1" for f in figures),
            "widths": browser.execute_script("return [...document.querySelectorAll('#clips img')]"
                                             ".map(i => i.naturalWidth)"),
            "captions": [f.text for f in figures]}}

def fresh():
    browser.execute_script("document.body.removeAttribute('data-state')")

try:
    for _ in range(300):
        try:
            browser.get("http://127.0.0.1:8123/")
            if browser.find_elements(By.CSS_SELECTOR, "#model option"):
                break
        except Exception:
            pass
        time.sleep(0.2)
    results = {{}}
    token = browser.find_element(By.ID, "token")
    token.send_keys({TOKEN!r})
    browser.find_element(By.ID, "text").send_keys("a person juggling a ball")
    fresh()
    browser.find_element(By.CSS_SELECTOR, "#by-text button").click()
    results["sentence"] = shown()
    fresh()
    browser.find_element(By.ID, "file").send_keys({str(roots / "videos" / VIDEO)!r})  # as a dropped file
    results["video"] = shown()
    token.clear()
    token.send_keys("wrong")
    fresh()
    browser.find_element(By.CSS_SELECTOR, "#by-text button").click()
    results["wrong token"] = shown()
    print("RESULTS " + json.dumps(results))
finally:
    browser.quit()
    server.terminate()
    server.wait(timeout=60)
""")
    done = subprocess.run(["unshare", "-n", "bash", "-c", f"ip link set lo up && {sys.executable} {script}"],
                          capture_output=True, text=True, timeout=400)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert found, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(found[0][len("RESULTS "):])
    for search in ("sentence", "video"):
        seen = results[search]
        assert seen["state"] == "shown" and seen["figures"] == seen["loaded"] == 8, (seen, done.stderr[-4000:])
        assert all(width > 0 for width in seen["widths"]) and Path(VIDEO).stem in seen["captions"][0]
        assert seen["status"].startswith("8 clip(s) and 1 video(s) of clip_vit_b32"), seen
    assert results["wrong token"]["state"] == "error" and results["wrong token"]["status"] == "unauthorized"


def test_the_python_client(server, roots, expected):
    with vidvec.Client(server.url, TOKEN) as client:
        job = client.wait(client.submit(roots / "videos" / VIDEO, idempotency_key="c1")["id"], timeout=120)
        assert client.submit(roots / "videos" / VIDEO, idempotency_key="c1")["id"] == job["id"]
        arrays = client.result(job["id"])
        np.testing.assert_allclose(arrays["features"], expected["features"], rtol=1e-5, atol=1e-6)
        by_path = client.wait(client.submit(path=str(roots / "videos" / VIDEO))["id"], timeout=120)
        assert by_path["status"] == "done" and by_path["clips"] == job["clips"]
        with pytest.raises(vidvec.client.ClientError, match="404: no job nope"):
            client.status("nope")
        with pytest.raises(vidvec.client.ClientError, match="404: this server has no store to search"):
            client.search("a ball")
    with vidvec.Client(server.url, "wrong") as client, pytest.raises(vidvec.client.ClientError, match="401"):
        client.status(job["id"])


def test_the_api_does_what_its_openapi_schema_says(server):
    """Property-based requests from the schema (schemathesis' command line against the running server): no server
    error, and every answer's status, content type and body as the schema declares them."""
    done = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json",
                           "--header", f"Authorization: Bearer {TOKEN}", "--checks", "all", "--max-examples", "30",
                           "--seed", "1", "--no-color"], capture_output=True, text=True, timeout=600,
                          cwd=server.root)  # its cache folder goes there, not into the checkout
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.timeout(600)
def test_a_thousand_requests_at_32_way_concurrency_lose_and_duplicate_no_job(tmp_path, roots):
    """1,000 requests from 32 threads: 150 uploads (50 of them retries with the same idempotency key), 550 status
    polls, 300 searches. Every accepted job is done exactly once; p50/p99 are printed (figures: docs/usage.md)."""
    from concurrent.futures import ThreadPoolExecutor

    feats = tmp_path / "feats"
    list(vidvec.extract([roots / "videos" / VIDEO], out=feats, num_workers=0, sampling=SamplingOverrides(fps=1.0)))
    vidvec.Store(tmp_path / "store").index(feats)
    small = tmp_path / "small.mp4"
    media.make_video(small, frames=10, fps=10, size=(64, 48))
    payload = small.read_bytes()
    server = Server(tmp_path, "--store", str(tmp_path / "store"), "--max-jobs-per-token", "1000").start()
    ids: dict[str, set[str]] = {}
    times: dict[str, list[float]] = {"upload": [], "status": [], "search": []}
    lock = threading.Lock()
    plan = ([("upload", f"k{i}") for i in range(100)] + [("upload", f"k{i}") for i in range(50)]
            + [("status", None)] * 550 + [("search", None)] * 300)
    random.Random(0).shuffle(plan)
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http:
            def request(kind: str, key: str | None) -> None:
                began = time.perf_counter()
                if kind == "upload":
                    answer = http.post("/v1/jobs", headers={"Idempotency-Key": key},
                                       files={"file": ("small.mp4", payload)}, data={"model": "efficientnet_lite0"})
                    assert answer.status_code in (200, 202), answer.text
                    with lock:
                        ids.setdefault(key, set()).add(answer.json()["id"])
                elif kind == "status":
                    with lock:
                        known = [i for s in ids.values() for i in s]
                    if known:
                        assert http.get(f"/v1/jobs/{random.choice(known)}").status_code == 200
                    else:
                        assert http.get("/healthz").status_code == 200
                else:
                    found = http.post("/v1/search", json={"like_clip": f"{Path(VIDEO).stem}@2.5", "k": 3})
                    assert found.status_code == 200 and found.json()["clips"][0]["start"] == 2.0
                with lock:
                    times[kind].append(time.perf_counter() - began)

            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda item: request(*item), plan))
            assert all(len(found) == 1 for found in ids.values()), ids  # a retried key: the same job
            for job in {next(iter(found)) for found in ids.values()}:
                assert server.wait_for(job)["status"] == "done"
            jobs = http.get("/healthz").json()["jobs"]
        assert jobs == {"queued": 0, "running": 0, "done": 100, "failed": 0}  # none lost, none twice
    finally:
        server.stop()
    for kind, spent in times.items():
        print(f"{kind}: {len(spent)} requests, p50 {np.percentile(spent, 50) * 1000:.0f} ms, "
              f"p99 {np.percentile(spent, 99) * 1000:.0f} ms")


def test_a_text_search_while_the_models_load_waits_for_the_served_model(monkeypatch):
    """No second copy of the model (with random weights, another model): the sentence goes through the served
    one once it is loaded; a server whose models never come answers 503."""
    from types import SimpleNamespace

    import torch

    from vidvec import service

    class Tower:
        def encode_text(self, texts):
            return torch.full((len(texts), 4), 7.0)

    worker = SimpleNamespace(ready=threading.Event(), loaded={})

    def load():
        time.sleep(0.3)
        worker.loaded["clip_vit_b32"] = SimpleNamespace(module=Tower())
        worker.ready.set()

    threading.Thread(target=load).start()
    assert service._encode_text(worker, "clip_vit_b32", "a dog").tolist() == [7.0] * 4
    monkeypatch.setattr(service, "MODELS_LOADING_WAIT_S", 0.1)
    with pytest.raises(service.ServiceError) as refused:
        service._encode_text(SimpleNamespace(ready=threading.Event(), loaded={}), "clip_vit_b32", "a dog")
    assert refused.value.status == 503 and "still loading" in str(refused.value)

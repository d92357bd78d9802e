"""`vidvec` command line: extract, status, inspect, models, encode-text, verify-weights.

Exit codes of `vidvec extract`: 0 every video is done (now or before), 1 at least one video
failed, now or in an earlier run and not retried (each named on stderr and in the ledger),
2 the run could not start or had to stop (bad option, unknown model, missing weights, settings
clash with the output folder, a ledger that cannot be written), 128 + N stopped by signal N.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .startup import trim_imports

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Turn videos into latent vectors with pretrained video, image and audio models.")
err = Console(stderr=True)
out = Console()
INDEX_EVERY_S = 300.0  # extract --index: how often the videos done so far are added to the store during a run


def _fail(message: str) -> None:
    """Print one error line (the message as it is: no markup, non-UTF-8 name bytes escaped) and exit 2."""
    err.print(Text.assemble(("error:", "red"), " ", _shown(message)), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _pyslowfast_out(inputs: List[Path], layout: str, listed: Optional[Path]) -> Path:
    """Where a run without --out keeps its ledger: only the Latent Vectors Service's way, one folder of videos
    and its vectors in FOLDER/output_vecs (a single video: its folder's)."""
    if layout not in ("pyslowfast", "lvs-timeline"):
        _fail("missing --out: the output folder (only --layout pyslowfast or lvs-timeline with one folder of videos "
              "may leave it out)")
    if len(inputs) != 1 or listed is not None:
        _fail(f"--layout {layout} without --out takes one folder of videos (its ledger goes to "
              "FOLDER/output_vecs); give --out for several inputs, a --list or a --manifest")
    from .writers import PYSLOWFAST_DIR

    folder = inputs[0] if inputs[0].is_dir() else inputs[0].parent
    return folder / PYSLOWFAST_DIR


@app.command()
def extract(
    inputs: List[Path] = typer.Argument(None, help="Video files and/or folders (searched recursively)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (features, ledger). Required, "
                                       "but with --layout pyslowfast or lvs-timeline and one folder of videos: "
                                       "FOLDER/output_vecs, as the Latent Vectors Service keeps it."),
    model: Optional[List[str]] = typer.Option(
        None, "--model", "-m", help="Model name (see `vidvec models`); repeat it to run several models on one "
        "decoding pass (each writes to OUT/<model>). Default: the architecture a PySlowFast .pyth given as "
        "--weights names in its cfg, else efficientnet_lite0."),
    weights: Optional[List[str]] = typer.Option(
        None, help="Weights entry name, a checkpoint path, or 'random'; once per --model when several."),
    list_file: Optional[Path] = typer.Option(None, "--list", help="Text file with one video path per line."),
    uids: Optional[Path] = typer.Option(None, "--uids", help="Text file of video ids (Ego4D's uid list): only the "
                                        "videos <folder>/<id>.<ext> of the given folders, in its order; an id "
                                        "without a video fails as a missing file."),
    manifest: Optional[Path] = typer.Option(None, help="CSV with video_path and optional output_path, start, end."),
    fmt: Optional[str] = typer.Option(None, "--format", help="npz (default), npy (+ .json sidecar) or pt."),
    layout: str = typer.Option(
        "vidvec", help="vidvec: OUT/<name>.<format>; pyslowfast: <video folder>/output_vecs/"
        "output_latent_vec_<stem>.npy (the video vector only; OUT keeps the ledger); lvs-timeline: the same place, "
        ".pk of features and intervals; hero: OUT/<name>.npz with only `features` in float16; video_features: "
        "OUT/<name>_<feature type>.npy, _fps.npy and _timestamps_ms.npy (with --preset video_features); ego4d: "
        "OUT/<name>.pt, one (windows, dim) tensor."),
    out_dtype: str = typer.Option("float32", help="float32 or float16 for stored features."),
    batch_size: Optional[int] = typer.Option(None, help="Clips per model call, across videos (default: 2 for "
                                             "clip models on the CPU, 16 otherwise)."),
    num_workers: Optional[int] = typer.Option(None, help="Decode worker processes (default: on an accelerator cores "
                                              "- 1, 1 to 8; on the CPU a quarter of the cores, 0 below 4 cores; 0 = "
                                              "decode in this process)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    devices: Optional[str] = typer.Option(None, help="One replica of the models per device, fed from one decoding "
                                          "stream, each video to the replica with the least waiting: cuda:0,cuda:1, "
                                          "all (every GPU), or cpu,cpu. Outputs are those of a one-device run."),
    dtype: str = typer.Option("float32", help="Model compute dtype: float32, float16 or bfloat16."),
    sampling: Optional[str] = typer.Option(None, help="Override the sampling kind: frames, windows or views."),
    fps: Optional[float] = typer.Option(None, help="Sample frames at this rate (default: the model's)."),
    clip_len: Optional[int] = typer.Option(None, help="Frames per clip."),
    stride: Optional[str] = typer.Option(None, help="Window stride: frames (16) or seconds ('2s')."),
    views: Optional[int] = typer.Option(None, help="Temporal views spread over the video (switches to views sampling)."),
    crops: Optional[int] = typer.Option(None, help="Spatial crops per clip: 1 (centre) or 3."),
    preset: Optional[str] = typer.Option(None, help="Another tool's way of running the model: ego4d (32 frames at "
                                                    "30 fps, stride 16), hero (HERO's extractors: for clip models one "
                                                    "clip per 1.5 s chunk, 32 frames from its start, padded at the "
                                                    "video's end as HERO does; for image models one frame per 1.5 s, "
                                                    "L2-normalised; its pixels; --stride 2s for 2 s), or "
                                                    "video_features (each model's v-iashin/video_features defaults "
                                                    "and timestamps_ms; --fps/--clip-len/--stride set its "
                                                    "extraction_fps/stack/step)."),
    normalize: Optional[str] = typer.Option(None, help="none or l2: store each clip's vector divided by its L2 norm "
                                            "(default: none, or what --preset says)."),
    streams: Optional[str] = typer.Option(None, help="I3D: rgb, flow or both (default)."),
    option: Optional[List[str]] = typer.Option(
        None, "--option", help="A model build option as KEY=VALUE, e.g. flow=raft_small (I3D) or "
        "postprocess=true (VGGish); `vidvec models` lists each model's options."),
    top_k: int = typer.Option(0, help="Also store the top-k classes per clip and per video."),
    logits: bool = typer.Option(False, "--logits", help="Also store the classifier logits."),
    save_flow: bool = typer.Option(False, "--save-flow", help="I3D: also write the RAFT flow of each clip "
                                   "(float16, pixels) beside the video's output, to <output stem>.flow/"
                                   "<clip>.npy; by default flow never touches the disk."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Process videos that failed before again."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo everything if the settings changed."),
    partial: bool = typer.Option(False, "--partial", help="Keep what a truncated or damaged video holds (planned "
                                 "on its decoded length, clips that need lost frames left out; recorded as "
                                 "partial) instead of failing it."),
    absolute_outputs: bool = typer.Option(False, "--absolute-outputs", help="Let a manifest's output_path be an "
                                          "absolute path outside --out."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="Run a plan written by `vidvec plan`: its inputs "
                                             "and settings (inputs and options given as well are checked against "
                                             "it, the first difference named)."),
    task: Optional[int] = typer.Option(None, "--task", help="With --plan: run this task's share only (0 .. tasks - "
                                       "1; default $SLURM_ARRAY_TASK_ID when set, else every task)."),
    executor: str = typer.Option("local", help="local (this machine); slurm: the run planned over --tasks array "
                                 "tasks and submitted with submitit; this command then waits, submitting again a "
                                 "task that stopped unfinished (up to --max-retries), unless --no-wait; ray: decode "
                                 "tasks and model replicas on a Ray cluster (--ray-address), this command recording "
                                 "every result."),
    ray_address: str = typer.Option("auto", help="ray: the cluster's head (host:port, ray://host:port) or auto (the "
                                    "cluster this machine belongs to)."),
    model_replicas: Optional[int] = typer.Option(None, help="ray: model replicas (actors), each with one GPU with "
                                                 "--device cuda (default: one per GPU of the cluster), else CPUs "
                                                 "(default 1)."),
    decode_cpus: Optional[int] = typer.Option(None, help="ray: decode tasks at once across the cluster, one CPU and "
                                              "one video each (default: the CPUs the replicas leave)."),
    tasks: Optional[int] = typer.Option(None, "--tasks", help="slurm: array tasks (default: the plan's, else 1)."),
    partition: Optional[str] = typer.Option(None, help="slurm: the partition."),
    gpus_per_task: int = typer.Option(0, help="slurm: GPUs per task."),
    cpus_per_task: Optional[int] = typer.Option(None, help="slurm: CPUs per task."),
    mem_gb: Optional[float] = typer.Option(None, help="slurm: memory per task in GB."),
    time_min: int = typer.Option(24 * 60, help="slurm: time limit per task in minutes."),
    max_retries: int = typer.Option(2, help="slurm: how often a task that stopped unfinished is submitted again; "
                                    "ray: how often a video whose worker died is given out again."),
    no_wait: bool = typer.Option(False, "--no-wait", help="slurm: return after submitting; `vidvec status OUT` "
                                 "follows the run."),
    index_into: Optional[Path] = typer.Option(None, "--index", help="Also add the done videos to this vector "
                                              "store, every 5 minutes and when the run ends (as `vidvec index OUT "
                                              "--into STORE`; checked before the run starts)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print failures and the summary only."),
) -> None:
    """Extract features from videos into OUT, resuming where a previous run stopped."""
    from .extraction import ExtractError, Extraction, execution_options, specify
    from .ledger import LedgerError, SettingsMismatch
    from .ray_executor import RayExecutorError, RayOptions
    from .runplan import PlanError, RunPlan
    from .sources import SourceError
    from .weights import WeightsError

    given = bool(inputs or list_file is not None or manifest is not None)
    if not given and plan_file is None:
        _fail("give videos or folders, --list FILE or --manifest CSV")
    if task is not None and plan_file is None:
        _fail("--task needs --plan FILE")
    if executor == "ray" and plan_file is not None:
        _fail("--executor ray schedules the videos itself: give the inputs, not --plan")
    clip_counter = _ClipCounter()
    try:
        if plan_file is not None:
            plan = RunPlan.read(plan_file)
            if given:
                spec, sources, _ = specify(**_spec_arguments(locals()))
                plan.check_matches(spec, sources)
            spec = plan.spec
            if task is None and os.environ.get("SLURM_ARRAY_TASK_ID", "").isdigit():
                task = int(os.environ["SLURM_ARRAY_TASK_ID"])
            sources = plan.sources if task is None else plan.share(task)
            execution = execution_options(device, devices, batch_size, num_workers)
        elif executor == "ray":  # the device is the cluster's, not this machine's
            spec, sources, execution = specify(**{**_spec_arguments(locals()), "device": "cpu", "devices": None})
            execution = _on_ray(execution, device, devices, save_flow,
                                RayOptions(ray_address, model_replicas, decode_cpus, max_retries))
        else:
            spec, sources, execution = specify(**_spec_arguments(locals()))
        out = Path(spec.output.out) if spec.output.out else out
        if index_into is not None:
            _check_store(index_into, spec, no_wait)
        run = Extraction.from_spec(spec, sources, execution, retry_failed=retry_failed, overwrite=overwrite,
                                   absolute_outputs=absolute_outputs, on_clips=clip_counter)
    except (ExtractError, SettingsMismatch, SourceError, WeightsError, LedgerError, PlanError, ValueError) as error:
        _fail(str(error))
    folders = [Path(t.sink.out) for t in run.targets]
    if executor == "slurm":
        given_up = _on_slurm(run, None if plan_file is None else plan, plan_file, tasks, quiet, no_wait,
                             dict(partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
                                  mem_gb=mem_gb, time_min=time_min, max_retries=max_retries))
        if index_into is not None and not no_wait:
            _index_folders(index_into, folders)
        if given_up:
            raise typer.Exit(1)
        return
    if executor not in ("local", "ray"):
        _fail(f"--executor must be local, slurm or ray, not {executor!r}")
    if tasks is not None:
        _fail("--tasks is for --executor slurm (or `vidvec plan`)")
    several = len(run.targets) > 1
    total = len(run.sources) * len(run.targets)
    if not quiet:
        err.print(f"vidvec: {len(run.sources)} video(s), device {run.model_options.device} -> {out}", highlight=False,
                  soft_wrap=True)
        for target in run.targets:
            err.print(f"  model {target.name} ({target.settings['weights']['name']}), "
                      f"{describe_sampling(target.spec.input, target.spec.preprocess, target.sampling)}"
                      + (f" -> {target.sink.out}" if several else ""), highlight=False, soft_wrap=True)
    counts = {"done": 0, "failed": 0, "skipped": 0, "partial": 0}
    began, indexed = time.perf_counter(), time.monotonic()
    interactive = err.is_terminal and not quiet
    progress = _progress() if interactive else None
    task = progress.add_task("extract", total=total, rate="") if progress else None
    if progress:
        progress.start()
    try:
        with _signals_interrupt():
            for n, outcome in enumerate(run, 1):
                counts[outcome.status] += 1
                counts["partial"] += outcome.status == "done" and outcome.partial is not None
                tag = f" [{outcome.model}]" if several else ""
                video = _shown(outcome.source.path)
                if outcome.status == "failed":
                    line = f"FAILED {video}{tag}: {_shown(outcome.reason)}"
                    (progress.console if progress else err).print(line, style="red", highlight=False,
                                                                  soft_wrap=True, markup=False)
                elif outcome.partial is not None and outcome.status == "done":
                    line = f"PARTIAL {video}{tag}: {_shown(outcome.partial)}"
                    (progress.console if progress else err).print(line, style="yellow", highlight=False,
                                                                  soft_wrap=True, markup=False)
                elif not quiet and not interactive:
                    extra = f"{outcome.result.clips} clips" if outcome.result else outcome.reason
                    err.print(f"[{n}/{total}] {outcome.status} {video}{tag} -> {_shown(outcome.output)} ({extra})",
                              highlight=False, soft_wrap=True, markup=False)
                if progress:
                    rate = clip_counter.clips / max(time.perf_counter() - began, 1e-9)
                    progress.update(task, advance=1, rate=f"{rate:.1f} clips/s")
                if index_into is not None and time.monotonic() - indexed >= INDEX_EVERY_S:
                    _index_folders(index_into, folders, approximate=False, console=progress.console if progress
                                   else err, quiet=quiet)  # the videos done so far become searchable
                    indexed = time.monotonic()
    except _Interrupted as stop:
        if progress:
            progress.stop()
        err.print(f"interrupted ({stop.name}): finished videos are saved; run the same command again to resume",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(128 + stop.signum)
    except (ExtractError, RayExecutorError) as error:  # the ledger cannot be written (a full disk), no cluster
        if progress:
            progress.stop()
        _fail(str(error))
    finally:
        if progress:
            progress.stop()
    wall = time.perf_counter() - began
    partial_text = f" ({counts['partial']} partial)" if counts["partial"] else ""
    err.print(f"done {counts['done']}{partial_text}, failed {counts['failed']}, already done {counts['skipped']} "
              f"in {wall:.1f} s ({clip_counter.clips / max(wall, 1e-9):.1f} clips/s); outputs in {out}",
              highlight=False, soft_wrap=True)
    if index_into is not None:
        counts["failed"] += _index_folders(index_into, folders)
    if counts["failed"]:
        err.print(f"see failures with: vidvec status {out}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _on_ray(execution, device: str, devices: Optional[str], save_flow: bool, options):
    """``extract --executor ray``: the execution options for the cluster, checked (the device is the replicas')."""
    import dataclasses

    if device not in ("cpu", "cuda"):
        _fail(f"--executor ray: --device is cpu or cuda (each replica has its own GPU), not {device!r}")
    if devices is not None:
        _fail("--executor ray places replicas itself: give --model-replicas, not --devices")
    if save_flow:
        _fail("--save-flow writes beside the outputs as clips are computed: run it with --executor local")
    for name, value in (("--model-replicas", options.replicas), ("--decode-cpus", options.decode_cpus)):
        if value is not None and value < 1:
            _fail(f"{name} must be at least 1, not {value}")
    return dataclasses.replace(execution, device=device, ray=options)


def _check_store(into: Path, spec, no_wait: bool) -> None:
    """``extract --index``: refuse, before any work, a run whose outputs the store could not take."""
    from .store import Store, StoreError

    if spec.output.layout != "vidvec":
        _fail(f"--index takes the vidvec layout's outputs, not --layout {spec.output.layout}")
    if no_wait:
        _fail(f"--index with --no-wait: run vidvec index {spec.output.out} --into {into} when the run is done")
    try:
        for slot in range(len(spec.models)):
            Store(into).check_settings(spec.settings(slot), spec.folder(slot))
    except StoreError as error:
        _fail(str(error))


def plan(tasks: int = typer.Option(..., "--tasks", help="How many tasks (SLURM array tasks, devices) share the run."),
         write: Optional[Path] = typer.Option(None, "--write", help="Where to write the plan file (default "
                                              "OUT/plan.json)."),
         measure: bool = typer.Option(True, "--measure/--no-measure", help="Time decoding and the models on a few "
                                      "inputs for the estimates (loads the models)."),
         threads: int = typer.Option(0, "--threads", help="Threads reading headers (0: twice the cores, at most "
                                     "32)."),
         **values: object) -> None:
    """Plan a run over TASKS tasks: every input's duration from its header, the cost of decoding and of each model
    measured on a few inputs here, the videos packed into tasks (longest first), the estimates; writes the plan
    file `vidvec extract --plan FILE` runs (default OUT/plan.json)."""
    from .extraction import ExtractError, specify
    from .ledger import LedgerError
    from .runplan import PlanError, RunPlan, measure_costs, read_durations
    from .sources import SourceError
    from .weights import WeightsError

    if not values["inputs"] and values["list_file"] is None and values["manifest"] is None:
        _fail("give videos or folders, --list FILE or --manifest CSV")
    if tasks < 1:
        _fail(f"--tasks must be at least 1, not {tasks}")
    try:
        spec, sources, execution = specify(**_spec_arguments(values))
        began = time.perf_counter()
        with Progress(TextColumn("[bold]headers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=not err.is_terminal) as progress:
            bar = progress.add_task("headers", total=len(sources))
            read = read_durations(sources, threads, on_read=lambda n: progress.advance(bar, n))
        rate = len(sources) / max(time.perf_counter() - began, 1e-9)
        for source, (_, reason) in zip(sources, read):
            if reason is not None:
                err.print(f"vidvec: {_shown(source.path)}: {_shown(reason)}", style="red", highlight=False,
                          soft_wrap=True, markup=False)
        durations = [seconds for seconds, _ in read]
        costs = measure_costs(spec, sources, durations, execution.device) if measure else None
        plan = RunPlan.make(spec, sources, durations, tasks, costs)
        path = plan.write(write or Path(spec.output.out or ".") / "plan.json")
    except (ExtractError, SourceError, WeightsError, LedgerError, PlanError, ValueError, OSError) as error:
        _fail(str(error))
    e = plan.estimates()
    console = Console()
    console.print(f"{e['videos']} video(s), {_span(e['video_hours'] * 3600)} of video ({e['unreadable']} "
                  f"unreadable); headers read at {rate:.0f} files/s", highlight=False)
    console.print(f"{tasks} task(s): the longest has {_span(e['makespan_video_s'])} of video; lower bound "
                  f"{_span(e['lower_bound_video_s'])} (max of the longest video and an equal share), "
                  f"{e['makespan_video_s'] / max(e['lower_bound_video_s'], 1e-9):.3f}x", highlight=False)
    if costs:
        per_model = ", ".join(f"{m.name} {c:.3f}" for m, c in zip(spec.models, costs.models))
        console.print(f"measured on {costs.videos} video(s), {costs.seconds:.0f} s of video, device {costs.device}: "
                      f"decoding {costs.decode:.3f} s per video second, models {per_model}; loading "
                      f"{costs.load:.1f} s", highlight=False, soft_wrap=True)
        console.print(f"estimate: {_span(e['wall_s'])} wall for the longest task, {e['device_hours']:.2f} "
                      f"device-hours in all, {e['output_bytes'] / 1e6:,.1f} MB of features", highlight=False)
    console.print(f"plan written to {path}; run it with: vidvec extract --plan {path} --task I (I = 0 .. "
                  f"{tasks - 1})", highlight=False, soft_wrap=True)


def _span(seconds: float) -> str:
    """Seconds as a person reads them: 45 s, 12.5 min, 3.20 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _with_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` taking, after its own parameters, every option of ``extract`` that decides the run (so the two
    commands cannot drift apart)."""
    import inspect

    own = list(inspect.signature(command).parameters.values())[:-1]
    shared = [p for name, p in inspect.signature(extract).parameters.items() if name in _RUN_OPTIONS]

    def wrapper(**values: object) -> None:
        command(**{p.name: values.pop(p.name) for p in own}, **values)

    wrapper.__signature__ = inspect.Signature(shared + own)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in shared + own}
    wrapper.__doc__ = command.__doc__
    return wrapper


_RUN_OPTIONS = ("inputs", "out", "model", "weights", "list_file", "uids", "manifest", "fmt", "layout", "out_dtype",
                "batch_size", "num_workers", "device", "devices", "dtype", "sampling", "fps", "clip_len", "stride", "views",
                "crops", "preset", "normalize", "streams", "option", "top_k", "logits", "save_flow", "partial")


app.command("plan")(_with_run_options(plan))


def _print_slurm(out: Path, console: Console) -> None:
    """The SLURM array a run submitted into ``out`` (if any): its job and how many tasks are still queued."""
    from .slurm import SlurmRun, queued

    run = SlurmRun.load(out) or SlurmRun.load(out.parent)  # a model's folder of a run with several models
    if run is None:
        return
    latest = run.latest()
    still = queued(list(latest.values()))
    jobs = ", ".join(sorted({j.split("_")[0] for ids in run.attempts.values() for j in ids}))
    state = ("SLURM not reachable" if still is None else
             f"{len(still)} of {run.tasks} task(s) queued or running" if still else "no task queued or running")
    console.print(f"slurm job(s) {jobs}: {state}", markup=False, highlight=False, soft_wrap=True)


def _on_slurm(run, plan, plan_file: Optional[Path], tasks: Optional[int], quiet: bool, no_wait: bool,
              slurm_options: dict) -> bool:
    """``extract --executor slurm``: plan (unless given a plan), submit the array, and wait unless told not to;
    whether a task was given up."""
    from .runplan import RunPlan, read_durations
    from .slurm import SlurmError, SlurmOptions, submit, wait

    out = Path(run.spec.output.out)
    for target in run.targets:  # the outputs were checked and the ledgers bound; the tasks open their own
        if target.ledger is not None:
            target.ledger.close()
    options = SlurmOptions(**slurm_options)
    execution = run.execution
    if plan is None:
        durations = [seconds for seconds, _ in read_durations(run.sources)]
        plan = RunPlan.make(run.spec, run.sources, durations, tasks or 1)
        plan_file = plan.write(out / "plan.json")
    elif tasks is not None and tasks != plan.tasks:
        _fail(f"the plan has {plan.tasks} tasks, not {tasks}")
    try:
        submitted = submit(out, Path(plan_file).resolve(), plan, options, execution.device, execution.batch_size,
                           execution.num_workers)
        first = submitted.latest()[0].split("_")[0]
        err.print(f"vidvec: submitted {plan.tasks} task(s) of {len(plan.sources)} video(s) as SLURM job {first} "
                  f"(logs in {out / '.vidvec-slurm'})", highlight=False, soft_wrap=True)
        if no_wait:
            err.print(f"follow it with: vidvec status {out}", highlight=False, soft_wrap=True)
            return False
        total = len(plan.sources)
        with Progress(TextColumn("[bold]videos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                      disable=quiet or not err.is_terminal) as progress:
            bar = progress.add_task("slurm", total=total)
            given_up = wait(out, submitted, plan, options, execution.device, execution.batch_size,
                            execution.num_workers, on_poll=lambda n: progress.update(bar, completed=n))
    except SlurmError as error:
        _fail(str(error))
    for task, left in sorted(given_up.items()):
        err.print(f"FAILED task {task}: {left} video(s) unfinished after {options.max_retries} retries (logs in "
                  f"{out / '.vidvec-slurm'})", style="red", highlight=False, soft_wrap=True)
    _print_status(out if len(run.targets) == 1 else out / run.targets[0].name)
    return bool(given_up)


def _spec_arguments(values: dict) -> dict:
    """The arguments of :func:`vidvec.extraction.specify` for the options of ``extract`` or ``plan``
    (``values``: the command's parameters by name)."""
    from .extraction import ExtractError, SamplingOverrides

    v = values
    out = v["out"]
    if out is None:
        out = _pyslowfast_out(v["inputs"] or [], v["layout"], v["list_file"] or v["manifest"])
    explicit = dict(kind=v["sampling"], fps=v["fps"], clip_len=v["clip_len"], views=v["views"], crops=v["crops"],
                    **_parse_stride(v["stride"]))
    try:
        overrides = SamplingOverrides.preset(v["preset"], **explicit) if v["preset"] else SamplingOverrides(**explicit)
    except ExtractError as error:
        _fail(str(error))
    return dict(inputs=v["inputs"] or [], model=v["model"] or None, out=out, weights=v["weights"] or None,
                list_file=v["list_file"], manifest=v["manifest"], uids=v["uids"], fmt=v["fmt"], layout=v["layout"],
                out_dtype=v["out_dtype"], batch_size=v["batch_size"], num_workers=v["num_workers"],
                device=v["device"], devices=v["devices"], dtype=v["dtype"], sampling=overrides,
                model_options={"streams": v["streams"], **_parse_options(v["option"] or [])},
                normalize=v["normalize"], top_k=v["top_k"], logits=v["logits"], save_flow=v["save_flow"],
                partial=v["partial"])


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP during a run (a KeyboardInterrupt, so that no ``except Exception`` on the way
    mistakes it for a failure of the video in hand)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into _Interrupted in the main thread while the run goes on, so each ends
    the run the same way: finished videos stay recorded, the user is told how to resume."""
    def stop(signum: int, _frame: object) -> None:
        raise _Interrupted(signum)

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, stop) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _shown(value: object) -> str:
    """A path or message as text any terminal can print: bytes of a file name that are not UTF-8 (Python keeps
    them as lone surrogates) are written as backslash escapes."""
    text = str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _ClipCounter:
    def __init__(self) -> None:
        self.clips = 0

    def __call__(self, n: int) -> None:
        self.clips += n


def _progress() -> Progress:
    return Progress(TextColumn("[bold]videos"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False)


def _parse_options(pairs: list[str]) -> dict:
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"--option takes KEY=VALUE, not {pair!r}")
        text = value.strip()
        options[key.strip()] = {"true": True, "false": False}.get(text.lower(), text)
    return options


def _parse_stride(stride: str | None) -> dict:
    if stride is None:
        return {}
    text = stride.strip().lower()
    try:
        if text.endswith("s"):
            return {"stride_seconds": float(text[:-1])}
        return {"stride": int(text)}
    except ValueError:
        _fail(f"--stride takes frames (16) or seconds (2s), not {stride!r}")
    return {}


@app.command()
def status(out: Path = typer.Argument(..., help="An output folder of `vidvec extract` (or the --out of a run with "
                                                "several models: each model's folder is shown).")) -> None:
    """Counts, failures and partial results with reasons, and throughput of an output folder (read-only)."""
    from .ledger import LEDGER_NAME, LedgerError

    folders = _output_folders(out)
    if not folders:
        _fail(f"{out} has no vidvec ledger ({LEDGER_NAME}); is it an output folder of `vidvec extract`?")
    for folder in folders:
        if len(folders) > 1:
            Console().print(str(folder), style="bold", markup=False, highlight=False, soft_wrap=True)
        try:
            _print_status(folder)
        except LedgerError as error:
            _fail(str(error))


def _output_folders(out: Path) -> list[Path]:
    """``out`` when it is an output folder, else the model folders of a run with several models in it."""
    from .ledger import LEDGER_NAME

    return [out] if (out / LEDGER_NAME).exists() else sorted(p.parent for p in out.glob(f"*/{LEDGER_NAME}"))


def _print_status(out: Path) -> None:
    """Print one output folder's summary; opens its ledger read-only (LedgerError when it can't)."""
    from .ledger import Ledger

    with Ledger(out, readonly=True) as ledger:
        summary = ledger.summary()
    settings = summary.get("settings") or {}
    table = Table(show_header=False, box=None)
    table.add_row("model", str(settings.get("model")))
    table.add_row("done", str(summary["done"]))
    table.add_row("partial", str(summary["partial"]))
    table.add_row("failed", str(summary["failed"]))
    if summary.get("in_progress"):
        table.add_row("in progress", f"{summary['in_progress']} (claimed by running runs)")
    table.add_row("skipped", str(summary["skipped"]))
    table.add_row("clips", str(summary["clips"]))
    table.add_row("video seconds", f"{summary['seconds']:.1f}")
    table.add_row("throughput", f"{summary['clips_per_s']:.2f} clips/s")
    console = Console()
    console.print(table)
    _print_slurm(out, console)
    for path, reason in summary["failures"]:
        console.print(f"FAILED {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    for path, note in summary["partials"]:
        console.print(f"PARTIAL {path}: {note}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def convert(
    out: Path = typer.Argument(..., help="A finished output folder of `vidvec extract` in vidvec's own layout."),
    to: str = typer.Option(..., "--to", help="pyslowfast or lvs-timeline (beside the videos), hero, video_features, "
                           "ego4d (into a new folder) or csd (one CMU-MultimodalSDK .csd file)."),
    into: Optional[Path] = typer.Option(None, "--into", help="The new output folder, or the .csd file."),
) -> None:
    """Write a finished output folder's vectors in another tool's layout, without computing them again. Exit
    codes: 0 all converted, 1 some videos could not be, 2 the folder cannot be converted as asked."""
    from .convert import ConvertError, convert as convert_folder

    converted = failed = 0
    try:
        for item in convert_folder(out, to, into):
            if item.reason is None:
                converted += 1
            else:
                failed += 1
                err.print(f"FAILED {item.key}: {item.reason}", markup=False, highlight=False, soft_wrap=True)
    except ConvertError as error:
        _fail(str(error))
    err.print(f"converted {converted}, failed {failed} -> {to}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def inspect(path: Path = typer.Argument(..., help="A feature file written by `vidvec extract`, in any layout."),
            key: Optional[str] = typer.Option(None, "--key", help="The video to show from a .csd (a "
                                              "computational sequence holds many).")) -> None:
    """Show a feature file's arrays, their shapes, and how it was made."""
    from .writers import read_features

    if not path.exists():
        _fail(f"{path}: no such file")
    try:
        arrays, provenance = read_features(path, key)
    except Exception as error:  # anything unreadable: one line, not a traceback
        _fail(f"{path}: not a vidvec feature file ({error})")
    console = Console()
    console.print(f"{path.resolve()}", highlight=False)
    for name, array in arrays.items():
        console.print(f"  {name:<20} {str(array.dtype):<8} {tuple(array.shape)}", highlight=False)
    video = provenance.get("video") or {}
    if provenance.get("layout") == "csd":
        console.print(f"  layout csd: sequence {provenance['sequence']}, video {provenance['key']} of "
                      f"{provenance['keys']}", highlight=False, soft_wrap=True)
        return
    if "layout" in provenance:  # another tool's layout: the file holds arrays only
        console.print(f"  layout {provenance['layout']}: no provenance in the file (the ledger of its run has the "
                      "settings)", highlight=False, soft_wrap=True)
        return
    console.print(f"  model {provenance.get('model')} weights {provenance.get('weights', {}).get('name')} "
                  f"sampling {provenance.get('sampling')}", highlight=False, soft_wrap=True)
    if video:
        console.print(f"  video {video.get('width')}x{video.get('height')} {video.get('fps', 0):.2f} fps "
                      f"{video.get('duration', 0):.2f} s {video.get('codec')}", highlight=False)
    if "video_topk_labels" in arrays:
        labels = ", ".join(f"{label} ({score:.2f})" for label, score in
                           zip(arrays["video_topk_labels"], arrays["video_topk_scores"]))
        console.print(f"  top classes: {labels}", highlight=False, soft_wrap=True)


@app.command("encode-text")
def encode_text(
    texts: List[str] = typer.Argument(..., help="Sentences to encode."),
    model: str = typer.Option("clip_vit_b32", "--model", "-m", help="A model with a text tower (clip_*, "
                                                                     "s3d_howto100m)."),
    weights: Optional[str] = typer.Option(None, help="Weights entry name, a checkpoint path, or 'random'."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the vectors to this .npy "
                                            "(N, D float32); default: print them as JSON."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Text vectors in the same space as the model's video vectors, to search videos by sentence."""
    import json

    import numpy as np

    from .writers import atomic_path

    vectors = _encode_texts(model, weights, texts, device)
    if out_file is None:
        print(json.dumps({"model": model, "texts": texts, "vectors": vectors.tolist()}))
        return
    with atomic_path(out_file) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
    err.print(f"{len(texts)} text vector(s) of {vectors.shape[1]} dims from {model} -> {out_file}",
              highlight=False)


def _encode_texts(model: str, weights: Optional[str], texts: List[str], device: str = "cpu"):
    """(N, D) float32 text vectors of ``model``'s text tower; one line and exit 2 when it has none."""
    import torch

    from .registry import get_card, list_models
    from .weights import WeightsError, load_model

    try:
        card = get_card(model)
        if not card.text:  # before any weights are fetched
            with_text = ", ".join(n for n in list_models() if get_card(n).text)
            _fail(f"model {card.name} has no text encoder; models with one: {with_text}")
        loaded = load_model(model, weights=weights, device=device)
    except (ValueError, WeightsError, RuntimeError) as error:
        _fail(str(error))
    with torch.inference_mode():
        return loaded.module.encode_text(texts).float().cpu().numpy()


@app.command()
def index(out: List[Path] = typer.Argument(..., help="Finished output folders of `vidvec extract` (vidvec's own "
                                           "layout; a run with several models: each OUT/<model>)."),
          into: Path = typer.Option(..., "--into", help="The store folder (created if new).")) -> None:
    """Add the done videos of output folders to a vector store (Parquet, readable without vidvec): only those it
    does not hold yet; a folder with other settings for a model already in the store is refused."""
    folders = [f for o in out for f in _output_folders(o) or [o]]
    if _index_folders(into, folders):
        raise typer.Exit(1)


def _index_folders(into: Path, folders: List[Path], approximate: bool = True, console: Console = err,
                   quiet: bool = False) -> int:
    """Index each output folder into the store ``into``, a line per folder (unless ``quiet``) and per video that
    could not be read; returns how many could not. A refusal (other settings, a store in use) ends the command
    (exit 2). ``approximate``: see :meth:`vidvec.Store.index`."""
    from .store import Store, StoreError

    store = Store(into)
    failed = 0
    for folder in folders:
        try:
            added = store.index(folder, approximate)
        except StoreError as error:
            _fail(str(error))
        for key, reason in added["failed"]:
            console.print(f"FAILED {_shown(key)}: {_shown(reason)}", style="red", highlight=False, soft_wrap=True,
                          markup=False)
        failed += len(added["failed"])
        if not quiet:
            console.print(f"{folder}: {added['added']} video(s) of {added['model']} added, {added['already']} "
                          f"already in {into}", highlight=False, soft_wrap=True)
    return failed


@app.command()
def search(store_path: Path = typer.Argument(..., help="A store made by `vidvec index`."),
           text: Optional[str] = typer.Option(None, "--text", help="A sentence, through the model's text tower."),
           like: Optional[Path] = typer.Option(None, "--like", help="A video file: extracted as the store's vectors "
                                               "were (same model, weights and settings), its video vector is the "
                                               "query."),
           like_clip: Optional[str] = typer.Option(None, "--like-clip", help="A stored clip, VIDEO@SECONDS (e.g. "
                                                   "R6llTwEh07w@4.5s)."),
           k: int = typer.Option(10, "-k", help="How many clips and videos."),
           model: Optional[str] = typer.Option(None, "--model", "-m", help="The store's model to search (needed "
                                               "when it holds several)."),
           weights: Optional[str] = typer.Option(None, help="--text, --like: the model's weights (default: the "
                                                 "entry the store's vectors were made with)."),
           html_file: Optional[Path] = typer.Option(None, "--html", help="Also write the results as a web page: "
                                                    "a thumbnail of each clip found, and per video its similarity "
                                                    "over time.")) -> None:
    """The clips and videos of a store nearest a sentence, a video or a stored clip (cosine similarity; a video
    scores as its best clip)."""
    from .store import Store, StoreError

    if sum(q is not None for q in (text, like, like_clip)) != 1:
        _fail("give one of --text, --like or --like-clip")
    if k < 1:
        _fail(f"-k must be at least 1, not {k}")
    store = Store(store_path)
    try:
        if not (store_path / "store.json").exists():
            raise StoreError(f"{store_path} is not a store (no store.json); make one with vidvec index")
        name = store.model_name(model)
        settings = store.manifest()["models"][name]["settings"]
        if text is not None:
            stored = settings["weights"]["name"]
            if weights is None and stored in ("random", "file"):
                _fail(f"the store's {name} vectors were made with weights '{stored}': give --weights for its text "
                      "tower")
            query, label = _encode_texts(name, weights or stored, [text])[0], text
        elif like is not None:
            query, label = _extract_query(like, settings, weights), f"like {like.name}"
        else:
            video, _, at = like_clip.rpartition("@")
            try:
                seconds = float(at.rstrip("s"))
            except ValueError:
                _fail(f"--like-clip takes VIDEO@SECONDS, not {like_clip!r}")
            query, label = store.vector_of(video, seconds, name), f"like {like_clip}"
        clips, videos = store.search(query, k, name)
        if html_file is not None:
            from .searchpage import write_page

            timelines = store.timelines(query, [v.video for v in videos], name)
            for line in write_page(html_file, label, name, clips, videos, timelines):
                err.print(f"vidvec: {_shown(line)}", style="yellow", highlight=False, soft_wrap=True, markup=False)
    except StoreError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{html_file}: cannot write the page ({error.strerror or error})")
    console = Console()
    console.print(f"clips ({name}):", highlight=False)
    for hit in clips:
        console.print(f"  {hit.score:.4f}  {hit.video}  {hit.start:.2f}-{hit.end:.2f} s", highlight=False,
                      markup=False)
    console.print("videos (best clip):", highlight=False)
    for hit in videos:
        console.print(f"  {hit.score:.4f}  {hit.video}  {hit.best.start:.2f}-{hit.best.end:.2f} s", highlight=False,
                      markup=False)
    if html_file is not None:
        err.print(f"page written to {html_file}", highlight=False, soft_wrap=True)


def _extract_query(video: Path, settings: dict, weights: Optional[str]):
    """The video vector of ``video`` extracted as an output folder bound to ``settings`` was (in memory)."""
    from .extraction import ExtractError, Extraction, execution_options
    from .sources import SourceError, collect_sources
    from .spec import RunSpec, SpecError
    from .weights import WeightsError

    if not video.is_file():
        _fail(f"--like takes one video file; {video} is not a file")
    try:
        spec = RunSpec.from_settings(settings, weights)
        outcome = next(iter(Extraction.from_spec(spec, collect_sources([video]), execution_options())))
    except (SpecError, ExtractError, SourceError, WeightsError) as error:
        _fail(str(error))
    if outcome.status != "done":
        _fail(f"{_shown(video)}: {_shown(outcome.reason)}")
    return outcome.video_vector


@app.command()
def serve(model: List[str] = typer.Option(..., "--model", "-m", help="A model to serve (repeat for several)."),
          weights: Optional[List[str]] = typer.Option(None, help="Its weights (entry, file or random), once per "
                                                      "--model when given."),
          tokens: Path = typer.Option(..., "--tokens", help="A file of bearer tokens, one per line."),
          data: Path = typer.Option(Path("vidvec-service"), "--data", help="Where jobs, uploads and results "
                                    "live (the job table: DATA/jobs.sqlite)."),
          store: Optional[Path] = typer.Option(None, "--store", help="A store made by `vidvec index`, for "
                                               "/v1/search."),
          root: Optional[List[Path]] = typer.Option(None, "--root", help="A folder whose videos clients may name "
                                                    "by path (repeat for several)."),
          host: str = typer.Option("127.0.0.1", help="The address to listen on."),
          port: int = typer.Option(8000, help="The port."),
          max_upload_mb: float = typer.Option(2048, help="Uploads over this are refused (413)."),
          max_minutes: float = typer.Option(60, help="Videos longer than this (their header) fail before any "
                                            "decoding."),
          max_jobs_per_token: int = typer.Option(16, help="Queued or running jobs a token may have (429 beyond)."),
          fps: Optional[float] = typer.Option(None, help="Sample frames at this rate (default: each model's)."),
          batch_size: Optional[int] = typer.Option(None, help="Clips per model call, across jobs (default: each "
                                                   "model's on the device)."),
          max_wait_ms: float = typer.Option(20, help="How long a partial batch waits for clips of other jobs."),
          decoders: int = typer.Option(2, help="Videos decoded at once."),
          device: str = typer.Option("cpu", help="cpu, cuda or cuda:N.")) -> None:
    """Serve the models over HTTP: jobs per video (upload or path) kept in SQLite, results as npz or JSON, search
    in a store; bearer tokens on every endpoint but /healthz."""
    try:
        import uvicorn

        from .service import ServiceConfig, create_app, read_tokens
    except ImportError:
        _fail("vidvec serve needs its extra: pip install 'vidvec[serve]'")
    from .extraction import SamplingOverrides
    if weights and len(weights) != len(model):
        _fail(f"{len(weights)} --weights for {len(model)} models: give one per model")
    from .registry import get_card

    try:
        for name in model:
            get_card(name)
        if decoders < 1 or (batch_size is not None and batch_size < 1) or max_wait_ms < 0:
            raise ValueError("--decoders and --batch-size must be at least 1, --max-wait-ms at least 0")
        config = ServiceConfig(tuple(model), data, read_tokens(tokens), tuple(weights or ()), store,
                               tuple(root or ()), int(max_upload_mb * 2**20), max_minutes * 60, max_jobs_per_token,
                               device, {"sampling": SamplingOverrides(fps=fps)} if fps else {}, batch_size,
                               max_wait_ms, decoders)
    except (OSError, ValueError) as error:
        _fail(str(error))
    import logging

    handler = logging.StreamHandler(sys.stderr)  # structured: one JSON line per request and job
    handler.setFormatter(logging.Formatter("%(message)s"))
    service_log = logging.getLogger("vidvec.service")
    service_log.addHandler(handler)
    service_log.setLevel(logging.INFO)
    service_log.propagate = False
    err.print(f"vidvec serve: {', '.join(model)} on http://{host}:{port} (data in {data})", highlight=False,
              soft_wrap=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")


@app.command("verify-weights")
def verify_weights(
    model: str = typer.Argument(..., help="A registered model (see `vidvec models`)."),
    weights: Optional[str] = typer.Option(None, help="Its weights entry name (default: the default entry)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Pin the cached file to this full sha256 (64 hex "
                                         "digits) that you checked: later loads report trust 'pinned'."),
) -> None:
    """Check a model's cached weights file against its published or recorded sha256, or pin it to one.

    Exit codes: 0 the file has the expected hash (or the pin is recorded), 1 it does not (nothing recorded),
    2 bad usage or no such file.
    """
    from .registry import get_card
    from .weights import WeightsError, check_weights, pin_sha256

    try:
        entry = get_card(model).get_weights(weights)
        check = check_weights(entry)
    except (ValueError, WeightsError) as error:
        _fail(str(error))
    if sha256 is not None:
        try:
            path = pin_sha256(entry, sha256)
        except (ValueError, OSError) as error:
            _fail(str(error))
        except WeightsError as error:
            err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        print(f"{path} has sha256 {sha256.strip().lower()}: trust {'published' if entry.sha256 else 'pinned'}")
        return
    expected = f"{check.expected} ({check.trust})" if check.expected else "none recorded yet"
    print(f"file      {check.path}\nsha256    {check.sha256}\nexpected  {expected}\ntrust     {check.trust}")
    if not check.ok:
        reason = (f"{check.path} does not have the expected sha256 ({check.trust})" if check.expected else
                  f"no sha256 is published or recorded for {check.path}: check it and pin it with --sha256 HEX")
        err.print(f"[red]error:[/red] {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def models(family: Optional[str] = typer.Option(None, help="Only this family.")) -> None:
    """List the registered models with their dimensions, default sampling and weights."""
    from .registry import get_card, list_models

    names = list_models(family)
    if not names:
        _fail(f"no models in family {family!r}")
    table = Table(title="vidvec models")
    for column in ("name", "family", "input", "dim", "default sampling", "weights (first is default)", "options"):
        table.add_column(column, overflow="fold")
    for name in names:
        card = get_card(name)
        options = "; ".join(f"{k}: {'|'.join(map(str, v))}" for k, v in card.options.items())
        table.add_row(name, card.family, card.input, str(card.embed_dim),
                      describe_sampling(card.input, card.preprocess_for(None), card.sampling),
                      ", ".join(w.name for w in card.weights) or "none published (--weights PATH)", options)
    Console(width=max(160, Console().width)).print(table)


def describe_sampling(kind: str, preprocess, sampling) -> str:
    """How a model sees a video, in words: its clip sampling, or for an audio model (``kind`` "audio") the
    examples its frontend (``preprocess``) cuts."""
    return preprocess.describe() if kind == "audio" else sampling.describe()


def main() -> None:
    """The ``vidvec`` command: runs it, then ends the process without tearing the interpreter down. By then every
    file is written, synced and renamed, the ledgers are closed and the output flushed; the teardown (mostly
    torch's) would only add time to every run (docs/benchmarks.md). An unexpected error still ends normally, with
    its traceback. Its imports of torchvision and open_clip leave out what vidvec never runs (vidvec.startup)."""
    trim_imports()
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if done.code is not None and not isinstance(done.code, int):
            print(done.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

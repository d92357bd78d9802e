"""The SLURM executor (``vidvec extract --executor slurm``): a run's plan submitted as a job array with submitit, each
array task running its share of the plan with the local executor, into the same output folder.

Submission happens where the command runs (a login node) and loads no model. While it waits, the ledger says what
is finished: a task that left the queue with videos of its share unrecorded (cancelled, preempted, killed) is
submitted again, up to ``max_retries`` times; a video done by an earlier attempt is adopted, not redone. The jobs
are listed in ``OUT/.vidvec-slurm/jobs.json`` and submitit's files (the pickled call, logs) go to that folder too.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # vidvec status reads a run's jobs without importing the planning side
    from .runplan import RunPlan

FOLDER = ".vidvec-slurm"


class SlurmError(Exception):
    """SLURM cannot be used (not installed, not reachable, submission refused): one line."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks SLURM for, and how often a task that did not finish is submitted again."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60
    max_retries: int = 2


def run_task(plan_path: str, task: int, device: str, batch_size: int | None, num_workers: int | None) -> dict:
    """One array task, inside the job: task ``task``'s share of the plan through the local executor; counts."""
    from .extraction import Extraction, execution_options
    from .runplan import RunPlan
    from .startup import trim_imports

    trim_imports()  # this process is the task's own
    plan = RunPlan.read(plan_path)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    execution = execution_options(device, None, batch_size, num_workers)
    for outcome in Extraction.from_spec(plan.spec, plan.share(task), execution):
        counts[outcome.status] += 1
    return counts


@dataclass
class SlurmRun:
    """A plan's array on SLURM: the job ids of each task's attempts."""

    plan_path: str
    tasks: int
    attempts: dict[int, list[str]] = field(default_factory=dict)

    def save(self, out: Path) -> None:
        from .writers import atomic_path

        with atomic_path(out / FOLDER / "jobs.json") as tmp:
            tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, out: Path) -> SlurmRun | None:
        path = out / FOLDER / "jobs.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["plan_path"], data["tasks"], {int(k): v for k, v in data["attempts"].items()})

    def latest(self) -> dict[int, str]:
        return {task: ids[-1] for task, ids in self.attempts.items() if ids}


def _executor(out: Path, options: SlurmOptions, device: str):
    try:
        import submitit
    except ImportError:
        raise SlurmError("the SLURM executor needs submitit: pip install 'vidvec[slurm]'") from None
    executor = submitit.SlurmExecutor(folder=str(out / FOLDER / "%j"))
    parameters: dict = {"time": options.time_min, "ntasks_per_node": 1}
    if options.partition:
        parameters["partition"] = options.partition
    if options.gpus_per_task:
        parameters["gpus_per_task"] = options.gpus_per_task
    if options.cpus_per_task:
        parameters["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb:
        parameters["mem"] = f"{int(options.mem_gb * 1024)}M"
    executor.update_parameters(**parameters)
    return executor


def submit(out: Path, plan_path: Path, plan: RunPlan, options: SlurmOptions, device: str,
           batch_size: int | None, num_workers: int | None, tasks: list[int] | None = None,
           run: SlurmRun | None = None) -> SlurmRun:
    """Submit ``tasks`` (default: all) of the plan as one job array; the run with their job ids, saved."""
    run = run or SlurmRun(os.fspath(plan_path), plan.tasks)
    tasks = list(range(plan.tasks)) if tasks is None else tasks
    executor = _executor(out, options, device)
    executor.update_parameters(array_parallelism=max(1, len(tasks)))
    with tempfile.TemporaryFile() as said:  # sbatch writes its errors to our stderr: keep them for one line
        saved = os.dup(2)
        os.dup2(said.fileno(), 2)
        try:
            jobs = executor.map_array(run_task, [os.fspath(plan_path)] * len(tasks), tasks, [device] * len(tasks),
                                      [batch_size] * len(tasks), [num_workers] * len(tasks))
        except Exception as error:  # noqa: BLE001 - sbatch missing, controller unreachable, request refused
            said.seek(0)
            lines = [line.strip() for line in said.read().decode("utf-8", "replace").splitlines() if line.strip()]
            lines = lines or [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = lines[-1].removeprefix("sbatch: error: ") if lines else type(error).__name__
            raise SlurmError(f"cannot submit to SLURM: {reason}") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    for task, job in zip(tasks, jobs):
        run.attempts.setdefault(task, []).append(str(job.job_id))
    run.save(out)
    return run


def queued(job_ids: list[str]) -> set[str] | None:
    """Which of the job ids (``123_4``) SLURM still has pending or running; None when it cannot be asked."""
    if not job_ids:
        return set()
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        # squeue refuses ids it no longer knows: those jobs are over
        return set() if "Invalid job id" in result.stderr else None
    return set(result.stdout.split()) & set(job_ids)


def unfinished(plan: RunPlan, task: int) -> int:
    """Videos of the task's share with no row in every model's ledger (done or failed)."""
    from .ledger import LEDGER_NAME, Ledger

    share = plan.share(task)
    missing = 0
    for slot in range(len(plan.spec.models)):
        folder = plan.spec.folder(slot)
        if folder is None or not (folder / LEDGER_NAME).exists():
            return len(share)
        with Ledger(folder, readonly=True) as ledger:
            records = ledger.records_by_key()
        missing = max(missing, sum(1 for source in share if source.key not in records))
    return missing


def wait(out: Path, run: SlurmRun, plan: RunPlan, options: SlurmOptions, device: str, batch_size: int | None,
         num_workers: int | None, on_poll: Callable[[int], None] | None = None, interval: float = 2.0) -> dict[int, int]:
    """Wait for every task; submit again each task that left the queue unfinished, up to ``options.max_retries``
    times. Returns the videos still unrecorded per task that ran out of retries (empty: all finished).
    ``on_poll(videos recorded)`` is told at each poll."""
    retries = {task: 0 for task in range(plan.tasks)}
    given_up: dict[int, int] = {}
    while True:
        latest = run.latest()
        still = queued(list(latest.values()))
        if still is None:
            raise SlurmError("SLURM is not reachable (squeue failed); the jobs may still run: vidvec status "
                             f"{out} shows what is done")
        left = {task: unfinished(plan, task) for task in latest}
        if on_poll:
            on_poll(sum(len(plan.share(t)) - n for t, n in left.items()))
        again = []
        for task, job in latest.items():
            if job in still or task in given_up or not left[task]:
                continue
            if retries[task] >= options.max_retries:
                given_up[task] = left[task]
            else:
                retries[task] += 1
                again.append(task)
        if again:
            submit(out, Path(run.plan_path), plan, options, device, batch_size, num_workers, again, run)
            continue
        if not still:
            return given_up
        time.sleep(interval)

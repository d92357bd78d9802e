"""vidvec plan and extract --plan: durations from headers, longest-first packing within 5% of the lower bound on a
simulated million-video set, the plan file, and each task's share run once."""

from __future__ import annotations

import heapq
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import media
import vidvec
from vidvec.cli import app
from vidvec.decode import probe
from vidvec.extraction import SamplingOverrides, specify
from vidvec.runplan import PlanError, RunPlan, lower_bound, pack, read_durations


def _greedy_in_order(durations, order, tasks):
    """Greedy to the least loaded task in the given order (Ego4D's slurm.py packs its videos sorted ascending)."""
    heap = [(0.0, task) for task in range(tasks)]
    loads = [0.0] * tasks
    for index in order:
        load, task = heapq.heappop(heap)
        loads[task] = load + durations[index]
        heapq.heappush(heap, (loads[task], task))
    return max(loads)


def test_longest_first_is_within_5_percent_of_the_bound_on_a_million_long_tailed_videos():
    rng = np.random.default_rng(0)
    # Pareto tail (alpha 1.5) from 30 s, capped at 8 h: most clips short, a few videos of hours.
    durations = np.minimum((rng.pareto(1.5, size=1_000_000) + 1) * 30.0, 8 * 3600).tolist()
    for tasks in (64, 1024):
        assignment, loads = pack(durations, tasks)
        assert len(assignment) == len(durations) and sum(loads) == pytest.approx(sum(durations))
        assert max(loads) <= 1.05 * lower_bound(durations, tasks)
    # The ascending order loses: the long videos come last and land on already loaded tasks.
    ascending = _greedy_in_order(durations, sorted(range(len(durations)), key=durations.__getitem__), 1024)
    assert ascending > 1.2 * lower_bound(durations, 1024)


def test_packing_small_cases():
    assignment, loads = pack([5, 4, 3, 3, 3], 2)
    assert assignment == [0, 1, 1, 0, 1] and loads == [8, 10]  # longest first; optimum is 9 (5+4 | 3+3+3)
    assert lower_bound([5, 4, 3, 3, 3], 2) == 9
    assert pack([7.0], 3) == ([0], [7.0, 0.0, 0.0]) and lower_bound([7.0], 3) == 7.0
    with pytest.raises(ValueError, match="tasks must be at least 1"):
        pack([1.0], 0)


def test_durations_come_from_the_headers_and_bad_files_say_why(shared_dir, tmp_path):
    videos = sorted((shared_dir / "assets" / "videos").iterdir())
    (tmp_path / "text.mp4").write_text("not a video")
    run_sources = specify([*videos, tmp_path / "text.mp4", tmp_path / "gone.mp4"], "efficientnet_lite0")[1]
    read = read_durations(run_sources, threads=4)
    for (seconds, reason), video in zip(read, videos):
        assert reason is None and seconds == pytest.approx(probe(video).duration, abs=0.06)
    assert read[-2][0] is None and read[-2][1].startswith("cannot open")
    assert read[-1] == (None, "file not found")


@pytest.fixture(scope="module")
def planned(tmp_path_factory, shared_dir):
    """A plan of the shared videos over 3 tasks, efficientnet_lite0 at 1 fps (the real weights, offline)."""
    root = tmp_path_factory.mktemp("plan")
    result = CliRunner().invoke(app, ["plan", str(shared_dir / "assets" / "videos"), "-m", "efficientnet_lite0",
                                      "--fps", "1", "-o", str(root / "out"), "--tasks", "3"])
    assert result.exit_code == 0, result.output
    assert "11 video(s)" in result.output and "3 task(s)" in result.output and "measured on 3 video(s)" in result.output
    return root


def test_each_task_runs_its_share_once_and_the_outputs_are_a_local_runs(planned, shared_dir, monkeypatch):
    plan = RunPlan.read(planned / "out" / "plan.json")
    assert plan.tasks == 3 and sorted(plan.assignment) == sorted(plan.assignment) and set(plan.assignment) == {0, 1, 2}
    assert plan.costs is not None and plan.costs.decode > 0 and plan.costs.models[0] > 0
    estimates = plan.estimates()
    assert estimates["makespan_video_s"] <= 1.05 * estimates["lower_bound_video_s"]
    runner = CliRunner()
    for task in (0, 1):
        result = runner.invoke(app, ["extract", "--plan", str(planned / "out" / "plan.json"), "--task", str(task), "-q"])
        assert result.exit_code == 0, result.output
        assert f"done {len(plan.share(task))}," in result.output
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")  # an array task finds its index in the environment
    result = runner.invoke(app, ["extract", "--plan", str(planned / "out" / "plan.json"), "-q"])
    assert result.exit_code == 0 and f"done {len(plan.share(2))}," in result.output
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    again = runner.invoke(app, ["extract", "--plan", str(planned / "out" / "plan.json"), "-q"])
    assert "done 0, failed 0, already done 11" in again.output
    video = shared_dir / "assets" / "videos" / "v_ZNVhz7ctTq0.mp4"
    (local,) = vidvec.extract([video], "efficientnet_lite0", None, sampling=SamplingOverrides(fps=1.0), num_workers=0)
    with np.load(planned / "out" / "v_ZNVhz7ctTq0.npz") as stored:
        np.testing.assert_allclose(stored["features"], local.features, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args, says", [
    (["--fps", "2"], "the plan's sampling is"),
    (["-m", "resnet18", "--weights", "random", "--fps", "1"], "the plan's model is 'efficientnet_lite0'"),
    (["--fps", "1", "--only-one"], None),
])
def test_a_run_that_is_not_the_plans_is_refused_naming_the_difference(planned, shared_dir, args, says):
    if says is None:  # the inputs differ
        video = shared_dir / "assets" / "videos" / "v_ZNVhz7ctTq0.mp4"
        cmd = ["extract", str(video), "-m", "efficientnet_lite0", "--fps", "1", "-o", str(planned / "out")]
        says = "the inputs differ from the plan's: 10 planned input(s) not given"
    else:
        cmd = ["extract", str(shared_dir / "assets" / "videos"), "-o", str(planned / "out"), *args]
    result = CliRunner().invoke(app, [*cmd, "--plan", str(planned / "out" / "plan.json"), "--task", "0"])
    assert result.exit_code == 2 and says in result.output, result.output


def test_bad_plan_files_and_tasks_are_one_line(planned, tmp_path):
    plan_file = planned / "out" / "plan.json"
    runner = CliRunner()
    result = runner.invoke(app, ["extract", "--plan", str(plan_file), "--task", "3"])
    assert result.exit_code == 2 and "this plan has tasks 0 to 2, not 3" in result.output
    result = runner.invoke(app, ["extract", str(tmp_path), "--task", "1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--task needs --plan FILE" in result.output
    edited = json.loads(plan_file.read_text())
    edited["spec"]["models"][0]["sampling"]["fps"] = 3.0
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(PlanError, match="its settings no longer hash as written"):
        RunPlan.read(tmp_path / "edited.json")
    (tmp_path / "junk.json").write_text("{")
    result = runner.invoke(app, ["extract", "--plan", str(tmp_path / "junk.json")])
    assert result.exit_code == 2 and "not a readable vidvec plan file" in result.output
    result = runner.invoke(app, ["plan", str(tmp_path), "-o", str(tmp_path / "o"), "--tasks", "0"])
    assert result.exit_code == 2 and "--tasks must be at least 1" in result.output


def test_an_unreadable_input_is_planned_as_nothing_and_named(tmp_path):
    (tmp_path / "videos").mkdir()
    media.make_video(tmp_path / "videos" / "a.mp4", frames=20, fps=10)
    (tmp_path / "videos" / "b.mp4").write_text("not a video")
    result = CliRunner().invoke(app, ["plan", str(tmp_path / "videos"), "-o", str(tmp_path / "out"), "--tasks", "2",
                                      "--no-measure"])
    assert result.exit_code == 0, result.output
    assert "b.mp4: cannot open" in result.output and "(1 unreadable)" in result.output
    plan = RunPlan.read(tmp_path / "out" / "plan.json")
    assert plan.durations[1] is None and plan.costs is None and len(plan.share(0)) + len(plan.share(1)) == 2


def test_a_plan_made_with_relative_paths_runs_from_another_folder(tmp_path, monkeypatch):
    (tmp_path / "work" / "videos").mkdir(parents=True)
    media.make_video(tmp_path / "work" / "videos" / "a.mp4", frames=20, fps=10)
    monkeypatch.chdir(tmp_path / "work")
    result = CliRunner().invoke(app, ["plan", "videos", "-o", "feats", "--tasks", "1", "--no-measure"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)  # a cluster task starts elsewhere
    result = CliRunner().invoke(app, ["extract", "--plan", "work/feats/plan.json", "-q"])
    assert result.exit_code == 0 and "done 1," in result.output, result.output
    assert (tmp_path / "work" / "feats" / "a.npz").is_file()
    monkeypatch.chdir(tmp_path / "work")  # the same run given again, relative: it matches
    result = CliRunner().invoke(app, ["extract", "videos", "-o", "feats", "--plan", "feats/plan.json", "-q"])
    assert result.exit_code == 0 and "already done 1" in result.output, result.output

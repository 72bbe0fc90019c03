"""The study's launcher (`surgseg.launch`) with real processes: submitit's local executor, runs pinned to (fake)
GPUs, a head killed mid-launch, the SLURM submission up to sbatch (fake sbatch/sacct/srun on PATH), a preempted job
requeued, failures told by a line."""

import importlib, os, pickle, signal, stat, subprocess, sys, threading, time
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from surgseg.core import SurgsegError
from surgseg.launch import RESULT_FILE, Job, SubmititRun, last_line, launch, read_record, train_command

TOYS = """
import os, threading, time
from pathlib import Path

BARRIER = threading.Barrier(2, timeout=20)
LOCK = threading.Lock()
RUNNING = {"now": 0, "most": 0}


def toy(job, env):
    "A stand-in run: counts its executions in its folder, notes its devices, sleeps, fails when asked; returns 2x."
    with open(job.run_dir / "executions", "a") as f: f.write(f"{os.getpid()}\\n")
    (job.run_dir / "devices").write_text(f"{env.get('CUDA_VISIBLE_DEVICES')}|{os.environ.get('CUDA_VISIBLE_DEVICES')}")
    time.sleep(job.params.get("sleep", 0))
    if job.params.get("fail"):
        with open(job.log, "a") as f: f.write("epoch 2: loss is nan\\n")
        raise RuntimeError("training diverged")
    if job.params.get("die"):
        print("killed mid-epoch", flush=True)
        os._exit(3)
    return job.params["x"] * 2


def together(job, env):
    "Returns only when two runs are inside it at the same time: its devices."
    BARRIER.wait()
    return env["CUDA_VISIBLE_DEVICES"]


def alone(job, env):
    "Notes how many runs are inside it at once: its devices."
    with LOCK:
        RUNNING["now"] += 1
        RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    time.sleep(0.3)
    with LOCK: RUNNING["now"] -= 1
    return env["CUDA_VISIBLE_DEVICES"]


# the child says it is ready inside its try block: a signal before that (a slow start on a busy machine) would kill it
# without the note
CHILD = (
    "import sys, time\\ntry:\\n    open(sys.argv[1] + '.ready', 'w').close()\\n    time.sleep(120)\\n"
    "except KeyboardInterrupt: open(sys.argv[1], 'w').close()"
)


def resumable(job, env):
    "A stand-in training that resumes from its progress file, with a child process that notes a clean interrupt."
    import subprocess, sys
    with open(job.run_dir / "executions", "a") as f: f.write(f"{os.getpid()}\\n")
    progress = job.run_dir / "progress"
    start = int(progress.read_text()) if progress.exists() else 0
    with open(job.run_dir / "starts", "a") as f: f.write(f"{start}\\n")
    from surgseg.core import die_with_parent  # as the study starts its training processes
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(job.run_dir / "child_stopped")],
                             preexec_fn=die_with_parent)
    ready, deadline = job.run_dir / "child_stopped.ready", time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.02)
    for step in range(start, 12):
        time.sleep(0.25)
        progress.write_text(str(step + 1))
    child.terminate()
    child.wait()
    return int(progress.read_text())


if __name__ == "__main__":  # a study head: python launch_toys.py OUT N
    import sys
    from surgseg.launch import Job, launch
    out, n = Path(sys.argv[1]), int(sys.argv[2])
    jobs = [Job(f"r{i}", out / f"r{i}", {"x": i, "sleep": 2}) for i in range(n)]
    print(launch(jobs, toy, executor="submitit", cluster="local", parallel=2, progress=False))
"""


@pytest.fixture
def toys(tmp_path, monkeypatch):
    "The toy run functions as an importable module (workers import it through PYTHONPATH)."
    d = tmp_path / "mods"
    d.mkdir()
    (d / "launch_toys.py").write_text(TOYS)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [str(d), os.environ.get("PYTHONPATH", "")] if p))
    sys.modules.pop("launch_toys", None)
    return importlib.import_module("launch_toys")


@pytest.fixture
def two_gpus(monkeypatch):
    "Two fake GPUs: CUDA_VISIBLE_DEVICES=0,1 and a device count of 2."
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)


def executions(job: Job) -> int:
    p = job.run_dir / "executions"
    return len(p.read_text().split()) if p.exists() else 0


def test_submitit_local_runs_each_job_once_in_its_own_process_and_device(toys, tmp_path, two_gpus):
    jobs = [Job(f"r{i}", tmp_path / "study" / f"r{i}", {"x": i}) for i in range(3)]
    out = launch(jobs, toys.toy, executor="submitit", cluster="local", progress=False)
    assert {n: (o.state, o.result) for n, o in out.items()} == {"r0": ("done", 0), "r1": ("done", 2), "r2": ("done", 4)}
    for j in jobs:
        rec = read_record(j)
        assert (rec["executor"], rec["cluster"], rec["job_id"]) == ("submitit", "local", out[j.name].job_id)
        assert rec["job_id"] != str(os.getpid())  # a process of its own
        given, seen = (j.run_dir / "devices").read_text().split("|")
        assert given == seen == rec["devices"] and seen in ("0", "1")  # the job process itself sees only its GPU
        assert f"== {j.name}: job {rec['job_id']}" in j.log.read_text()  # the job's output is in the run folder
        assert pickle.loads((j.run_dir / RESULT_FILE).read_bytes()) == out[j.name].result
    again = launch(jobs, toys.toy, executor="submitit", cluster="local", progress=False)
    assert {n: o.result for n, o in again.items()} == {n: o.result for n, o in out.items()}
    assert [executions(j) for j in jobs] == [1, 1, 1]  # the rerun ran nothing


def test_two_fake_gpus_give_two_runs_at_once_distinct_devices(toys, tmp_path, two_gpus):
    jobs = [Job(f"g{i}", tmp_path / f"g{i}") for i in range(2)]
    out = launch(jobs, toys.together, progress=False)  # each waits until the other is running too
    assert all(o.ok for o in out.values()), [o.error for o in out.values()]
    assert sorted(o.result for o in out.values()) == ["0", "1"]


def test_two_gpus_per_run_gives_one_run_both_and_the_accelerate_command(toys, tmp_path, two_gpus):
    jobs = [Job(f"p{i}", tmp_path / f"p{i}") for i in range(3)]
    out = launch(jobs, toys.alone, gpus_per_run=2, progress=False)
    assert [o.result for o in out.values()] == ["0,1"] * 3 and toys.RUNNING["most"] == 1
    cmd = train_command(["train", "--seed", "0"], {"CUDA_VISIBLE_DEVICES": out["p0"].result})
    assert cmd[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    assert Path(cmd[-4]).name == "surgseg" and cmd[-3:] == ["train", "--seed", "0"]
    one = train_command(["train"], {"CUDA_VISIBLE_DEVICES": "1"})
    assert one[0] == sys.executable and "accelerate" not in " ".join(one) and one[-1] == "train"
    with pytest.raises(SurgsegError, match="gpus_per_run=3: only 2 GPU"):
        launch(jobs, toys.alone, gpus_per_run=3, progress=False)


def test_a_killed_head_rerun_runs_nothing_twice(toys, tmp_path):
    out_dir = tmp_path / "study"
    jobs = [Job(f"r{i}", out_dir / f"r{i}", {"x": i, "sleep": 2}) for i in range(4)]
    head = subprocess.Popen(
        [sys.executable, toys.__file__, str(out_dir), "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    deadline = time.time() + 60
    while sum(executions(j) for j in jobs) < 2 and time.time() < deadline:
        time.sleep(0.05)
    head.kill()
    head.wait()
    started = [j.name for j in jobs if executions(j)]
    assert len(started) == 2, started  # killed while two runs were running
    assert not any((j.run_dir / RESULT_FILE).exists() for j in jobs)  # and before any finished
    res = launch(jobs, toys.toy, executor="submitit", cluster="local", parallel=2, progress=False)
    assert {n: o.result for n, o in res.items()} == {"r0": 0, "r1": 2, "r2": 4, "r3": 6}
    assert [executions(j) for j in jobs] == [1, 1, 1, 1]  # the two orphans were waited on, not rerun


FAKE = {
    "sbatch": '#!/bin/sh\nn=$(ls "$FAKE_SLURM" | grep -c "^script")\ncp "$1" "$FAKE_SLURM/script$n.sh"\n'
    'echo "Submitted batch job $((4242 + n))"\n',
    "sacct": '#!/bin/sh\necho "JobID|State|NodeList"\ncat "$FAKE_SLURM/states" 2>/dev/null\n',
    "srun": "#!/bin/sh\nexit 0\n",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    "sbatch, sacct and srun stand-ins on PATH: sbatch keeps each script and answers a job id; sacct reads `states`."
    b, s = tmp_path / "bin", tmp_path / "slurm"
    b.mkdir()
    s.mkdir()
    for name, text in FAKE.items():
        (b / name).write_text(text)
        (b / name).chmod((b / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{b}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(s))
    return s


def test_slurm_submission_is_one_array_with_the_parameters_and_never_resubmits_a_live_job(toys, tmp_path, fake_slurm):
    jobs = [Job(f"s{i}", tmp_path / "study" / f"s{i}", {"x": i}) for i in range(3)]
    kw = dict(
        executor="submitit",
        cluster="slurm",
        partition="gpu",
        account="surgvision",
        gpus_per_run=2,
        time_min=90,
        cpus_per_run=6,
        mem_gb=24,
        setup="module load cuda/12.4\nsource /shared/venv/bin/activate",
        wait=False,
        progress=False,
    )
    out = launch(jobs, toys.toy, **kw)
    assert [(o.state, o.job_id) for o in out.values()] == [("running", f"4242_{i}") for i in range(3)]
    script = (fake_slurm / "script0.sh").read_text().splitlines()
    for line in [
        "#SBATCH --array=0-2%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=surgvision",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=24GB",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=surgseg",
        "module load cuda/12.4",
        "source /shared/venv/bin/activate",
    ]:
        assert line in script, line
    assert any(s.startswith("srun ") and "submitit.core._submit" in s for s in script)
    folder = tmp_path / "study" / ".submitit"
    for i, j in enumerate(jobs):
        rec = read_record(j)
        assert (rec["cluster"], rec["job_id"], rec["folder"]) == ("slurm", f"4242_{i}", str(folder / "%j"))
        call = DelayedSubmission.load(folder / f"4242_{i}" / f"4242_{i}_submitted.pkl")
        assert isinstance(call.function, SubmititRun) and call.args[0].name == j.name  # its own call, checkpointable
    # array task 0 as SLURM would start it: the submitit worker runs the toy run and keeps its result in the run folder
    env = {
        **os.environ,
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4243",
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NUM_NODES": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }
    r = subprocess.run(
        [sys.executable, "-u", "-m", "submitit.core._submit", str(folder / "%j")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (jobs[0].run_dir / "devices").read_text() == "0,1|0,1" and "== s0: job 4242_0" in jobs[0].log.read_text()
    # the rerun: task 0 finished, task 1 still pending, task 2 failed -> only task 2 is submitted again (alone)
    (fake_slurm / "states").write_text("4242_0|COMPLETED|n1\n4242_1|PENDING|\n4242_2|FAILED|n2\n")
    again = launch(jobs, toys.toy, **kw)
    assert [(o.state, o.job_id) for o in again.values()] == [
        ("done", "4242_0"),
        ("running", "4242_1"),
        ("running", "4243"),
    ]
    assert again["s0"].result == 0
    assert sorted(p.name for p in fake_slurm.glob("script*")) == ["script0.sh", "script1.sh"]
    assert not any(s.startswith("#SBATCH --array") for s in (fake_slurm / "script1.sh").read_text().splitlines())


def test_a_failed_run_reports_the_last_line_of_its_log(toys, tmp_path):
    jobs = [
        Job("ok", tmp_path / "ok", {"x": 1}),
        Job("nan", tmp_path / "nan", {"fail": True}),
        Job("killed", tmp_path / "killed", {"die": True}),
    ]
    out = launch(jobs, toys.toy, executor="submitit", cluster="local", parallel=3, progress=False)
    assert [o.state for o in out.values()] == ["done", "failed", "failed"] and out["ok"].result == 2
    assert (
        out["nan"].error
        == last_line(jobs[1].log)
        == "nan failed: RuntimeError: training diverged (last output: epoch 2: loss is nan)"
    )
    assert "Traceback" in jobs[1].log.read_text()  # the whole traceback is in the log
    assert out["killed"].error.startswith(f"killed: job {out['killed'].job_id} ended without a result")
    assert out["killed"].error.endswith("(last line of its log: killed mid-epoch)")
    local = launch([Job("nan2", tmp_path / "nan2", {"fail": True})], toys.toy, progress=False)["nan2"]
    assert local.state == "failed"
    assert local.error == "nan2 failed: RuntimeError: training diverged (last output: epoch 2: loss is nan)"
    again = launch(jobs[:2], toys.toy, executor="submitit", cluster="local", progress=False)
    assert [executions(j) for j in jobs[:2]] == [1, 2] and again["nan"].state == "failed"  # a failure is tried again


def test_a_preempted_job_is_requeued_and_resumes(toys, tmp_path):
    job = Job("pre", tmp_path / "pre")
    res = {}
    head = threading.Thread(
        target=lambda: res.update(launch([job], toys.resumable, executor="submitit", cluster="local", progress=False))
    )
    head.start()
    progress, deadline = job.run_dir / "progress", time.time() + 60
    while not (progress.exists() and int(progress.read_text() or 0) >= 3) and time.time() < deadline:
        time.sleep(0.05)
    worker = int((job.run_dir / "executions").read_text().split()[0])
    os.kill(worker, signal.SIGUSR2)  # what SLURM sends before a time limit or a preemption
    head.join(90)
    assert not head.is_alive() and res["pre"].ok and res["pre"].result == 12
    pids = (job.run_dir / "executions").read_text().split()
    starts = [int(s) for s in (job.run_dir / "starts").read_text().split()]
    assert len(pids) == 2 and pids[0] != pids[1]  # requeued: the same call again in a new process
    assert starts[0] == 0 and starts[1] >= 3  # which resumed where the first stopped
    assert (job.run_dir / "child_stopped").exists()  # the first attempt's child was interrupted cleanly
    assert read_record(job)["job_id"] == res["pre"].job_id  # the same job, not a new submission
    assert "pre interrupted (SystemExit)" in job.log.read_text()


def test_a_child_of_a_background_command_can_still_be_interrupted(toys, tmp_path):
    "`nohup cmd &` starts cmd with SIGINT ignored; children started with `die_with_parent` get their KeyboardInterrupt."
    from surgseg.core import die_with_parent

    code = toys.CHILD  # the preempted-job toy's child: notes a KeyboardInterrupt
    note = tmp_path / "stopped"
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background command
    try:
        plain = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "plain")])
        child = subprocess.Popen([sys.executable, "-c", code, str(note)], preexec_fn=die_with_parent)
    finally:
        signal.signal(signal.SIGINT, old)
    deadline = time.time() + 60
    while not (Path(f"{note}.ready").exists() and (tmp_path / "plain.ready").exists()) and time.time() < deadline:
        time.sleep(0.02)
    for p in (child, plain):
        p.send_signal(signal.SIGINT)
    assert child.wait(30) == 0 and note.exists()  # interrupted cleanly
    time.sleep(0.5)
    assert plain.poll() is None  # without it, the interrupt is ignored (what made requeues wait 60 s for nothing)
    plain.kill()
    plain.wait()

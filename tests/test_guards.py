"""Guards before a run starts, in the order execute() checks them: swift installed, the output dir, the disk,
GPUs busy with another program, GPUs held by another qwen-tune run. Each refuses before anything is written.

A test of one guard through execute() sets up every earlier guard to pass (the `launchable` fixture: a
swift on PATH, a writable output dir, room on the disk, a free GPU nobody locks), so it fails on the guard
it targets and on no other, and asserts that guard's own error and message."""

import errno
import os
import shutil
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from conftest import PLAIN_MACHINE, load_script

from qwen_tune.errors import DiskSpaceError, GpuBusyError, OutputError, SwiftMissing, TrainingFailed
from qwen_tune.machine.gpus import GIB, MIB, Gpu, GpuProcess, Inventory, cpu_inventory
from qwen_tune.machine.readiness import TorchFacts
from qwen_tune.planning.memory import checkpoint_bytes
from qwen_tune.planning.models import ModelShape, resolve_model
from qwen_tune.planning.plan import DataSummary, Job
from qwen_tune.planning.planner import RUN_FILES_BYTES, disk_bytes_needed, make_plan
from qwen_tune.planning.profiles import shipped_profiles
from qwen_tune.planning.recipes import load_recipe
from qwen_tune.running import attempts, locks, rundir
from qwen_tune.running.attempts import execute
from qwen_tune.running.rundir import check_disk_space, check_output_dir, create_run_dir, nearest_existing
from qwen_tune.swift import command


def plan_on(gpu: Gpu):
    recipe = load_recipe("self-cognition-qwen2.5-7b")
    return make_plan(recipe=recipe, model=resolve_model(recipe.model), inventory=Inventory(gpus=(gpu,), source="nvml"),
                     profiles=shipped_profiles(), data=DataSummary(100, 80, "estimated"),
                     dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip


FREE = Gpu(0, "NVIDIA H100 80GB HBM3", 80 * GIB, (9, 0), free_bytes=79 * GIB)
BUSY = Gpu(0, "NVIDIA H100 80GB HBM3", 80 * GIB, (9, 0), free_bytes=10 * GIB,
           processes=(GpuProcess(4242, "python3", 69 * GIB),))  # fmt: skip
FAKE_SWIFT = Path(__file__).resolve().parent / "fakes" / "bin"


@pytest.fixture
def launchable(tmp_path, monkeypatch):
    """Every guard passes unless a test breaks one: tests/fakes/bin's swift first on PATH (it only notes that
    it ran), 100 GiB free on the disk, GPU locks in tmp_path/locks, a torch that can use the GPUs. Returns where
    the fake swift leaves its mark."""
    monkeypatch.setenv("PATH", f"{FAKE_SWIFT}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_SWIFT_RAN", str(tmp_path / "swift-ran"))
    monkeypatch.setattr(attempts, "check_disk_space", partial(check_disk_space, free_bytes=lambda path: 100 * GIB))
    monkeypatch.setattr(locks, "LOCK_DIR", tmp_path / "locks")
    monkeypatch.setattr(command, "swift_executable", lambda: shutil.which("swift"))  # PATH's, not this Python's own
    monkeypatch.setattr(command, "swift_cli_dir", lambda: None)  # not this Python's ms-swift started directly
    monkeypatch.setattr(attempts, "read_torch", lambda: TorchFacts("2.11.0+cu130", "13.0"))  # a CUDA torch
    return tmp_path / "swift-ran"


def job_on(gpu: Gpu, run_dir: Path) -> Job:
    return Job(plan=plan_on(gpu), rows=[{"query": "q", "response": "r"}], run_dir=run_dir)


def refused(job: Job, error, match: str, swift_ran: Path, force: bool = False):
    """execute() refuses with that guard's error and message, and neither writes nor starts anything."""
    with pytest.raises(error, match=match) as caught:
        execute(job, verify=False, force=force, on_progress=print)
    assert type(caught.value) is error
    assert not job.run_dir.exists() and not swift_ran.exists()
    return caught.value


@contextmanager
def gpu_held_by_another_run(lock_dir: Path, index: int | None):
    """Another process holding GPU `index`'s lock (the CPU's for None), as another qwen-tune run would; yields its pid."""
    with load_script("bad_inputs").lock_held([] if index is None else [index], lock_dir=lock_dir) as pid:
        yield pid


def test_with_every_guard_passing_the_run_starts_swift(launchable, tmp_path):
    """The control for the refusals above: `launchable` alone lets execute() past every guard to swift."""
    job = job_on(FREE, tmp_path / "runs" / "run")
    with pytest.raises(TrainingFailed) as caught:  # the fake swift trains nothing and exits 99
        execute(job, verify=False, force=False, on_progress=print, on_notice=lambda text: None)
    assert type(caught.value) is TrainingFailed and "exit code 99" in str(caught.value)
    assert launchable.exists() and job.run_dir.is_dir()


# 1. swift installed


def test_run_refuses_without_swift_before_anything_else(launchable, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no swift; every later guard would pass
    error = refused(
        job_on(FREE, tmp_path / "runs" / "run"), SwiftMissing, r"the `swift` command is not installed: pip install", launchable
    )
    assert error.exit_code == 19


# 2. the output dir


def test_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    assert nearest_existing(tmp_path / "notes.txt" / "runs" / "a") == tmp_path / "notes.txt"
    with pytest.raises(OutputError, match="notes.txt is not a directory; pick another --output-dir"):
        check_output_dir(tmp_path / "notes.txt" / "runs")
    check_output_dir(tmp_path / "new" / "runs")  # made when the run starts
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="locked is not writable"):
        check_output_dir(locked / "runs")


def test_run_refuses_an_output_dir_under_a_file_before_writing_anything(launchable, tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    error = refused(
        job_on(FREE, tmp_path / "notes.txt" / "runs" / "run"), OutputError, "notes.txt is not a directory", launchable
    )
    assert error.exit_code == 15 and (tmp_path / "notes.txt").read_text() == "mine\n"


# 3. the disk


def test_disk_estimate_counts_three_checkpoints_the_data_and_the_logs():
    plan = plan_on(FREE)
    checkpoint = 20_185_088 * 12 + MIB  # Qwen2.5-7B, rank 8: adapter and AdamW moments in fp32
    assert disk_bytes_needed(plan, dataset_bytes=1000) == 3 * checkpoint + 1000 + RUN_FILES_BYTES
    assert 0.7 * GIB < disk_bytes_needed(plan, 0) < 0.8 * GIB


def test_checkpoint_estimate_covers_the_measured_one():
    """checkpoint-520 of the CPU demo (the tiny shape, rank 64) took 4,540,828 bytes on disk."""
    tiny = ModelShape("qwen2", 128, 2, 4, 2, 32, 512, 1152, True)
    assert 4_540_828 <= checkpoint_bytes(tiny, 64) <= 1.25 * 4_540_828
    assert checkpoint_bytes(tiny, 64, zero=True) > checkpoint_bytes(tiny, 64)


def test_disk_check_compares_with_what_is_free(tmp_path):
    short = r"needs about 730 MiB \(checkpoints, data, logs\), 100 MiB is free; .* --output-dir"
    with pytest.raises(DiskSpaceError, match=short):
        check_disk_space(730 * MIB, tmp_path / "runs", free_bytes=lambda path: 100 * MIB)
    check_disk_space(730 * MIB, tmp_path / "runs", free_bytes=lambda path: 2 * GIB)
    asked = []
    check_disk_space(1, tmp_path / "runs", free_bytes=lambda path: asked.append(path) or GIB)
    assert asked == [tmp_path / "runs"]


def test_run_refuses_a_full_disk_before_writing_anything(launchable, tmp_path, monkeypatch):
    monkeypatch.setattr(attempts, "check_disk_space", partial(check_disk_space, free_bytes=lambda path: 10 * MIB))
    error = refused(
        job_on(FREE, tmp_path / "runs" / "run"), DiskSpaceError, r"needs about \d+ MiB .*, 10 MiB is free", launchable
    )
    assert error.exit_code == 16 and not (tmp_path / "runs").exists()


# 4. GPUs busy with another program


def test_busy_gpu_is_named_with_its_processes():
    plan = plan_on(BUSY)
    (busy,) = plan.busy_gpus()
    assert "GPU 0 has 10.00 GiB free" in busy and "pid 4242 python3 69.00 GiB" in busy
    assert any("run out of memory" in w for w in plan.warnings)
    assert not plan_on(FREE).busy_gpus()


def test_run_refuses_a_busy_gpu_before_writing_anything(launchable, tmp_path):
    error = refused(job_on(BUSY, tmp_path / "runs" / "run"), GpuBusyError, r"GPU 0 has 10.00 GiB free.*pid 4242 python3.*pass --force",
                    launchable)  # fmt: skip
    assert error.exit_code == 17


# 5. GPUs held by another qwen-tune run


def test_a_held_gpu_names_the_other_run(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "LOCK_DIR", tmp_path)
    with gpu_held_by_another_run(tmp_path, 1) as pid:
        with pytest.raises(GpuBusyError, match=rf"GPU 1 is in use by another qwen-tune run \(pid {pid}, runs/other\)"):
            with locks.run_locks([0, 1], "runs/mine"):
                pass
        with locks.run_locks([0], "runs/mine"):  # other GPUs stay usable
            pass
    time.sleep(0.1)
    with locks.run_locks([1], "runs/mine"):  # released when the holder dies
        assert "runs/mine" in Path(tmp_path / "gpu-1.lock").read_text()


def test_run_refuses_a_gpu_another_run_holds_before_writing_anything(launchable, tmp_path):
    with gpu_held_by_another_run(tmp_path / "locks", 0) as pid:
        error = refused(job_on(FREE, tmp_path / "runs" / "run"), GpuBusyError,
                        rf"GPU 0 is in use by another qwen-tune run \(pid {pid}, runs/other\)", launchable)  # fmt: skip
    assert error.exit_code == 17


def test_the_cpu_held_by_another_run_is_named_and_gpus_stay_free(tmp_path, monkeypatch):
    """Two runs on the CPU at once each ran 7× slower and neither said why: the CPU is locked like a GPU."""
    monkeypatch.setattr(locks, "LOCK_DIR", tmp_path)
    with gpu_held_by_another_run(tmp_path, None) as pid:
        with pytest.raises(GpuBusyError, match=rf"^the CPU is in use by another qwen-tune run \(pid {pid}, runs/other\); wait"):
            with locks.run_locks([], "runs/mine"):
                pass
        with locks.run_locks([0], "runs/mine"):  # a GPU run beside it
            pass
    time.sleep(0.1)
    with locks.run_locks([], "runs/mine"):
        assert "runs/mine" in Path(tmp_path / "cpu.lock").read_text()


def cpu_job(run_dir: Path) -> Job:
    recipe = load_recipe("demo-tiny-cpu")
    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    plan = make_plan(recipe=recipe, model=resolve_model(tiny), inventory=cpu_inventory(), profiles=shipped_profiles(),
                     data=DataSummary(100, 80, "estimated"), dataset_path="d.jsonl", output_dir="out", machine=PLAIN_MACHINE)  # fmt: skip
    return Job(plan=plan, rows=[{"query": "q", "response": "r"}], run_dir=run_dir)


def test_run_refuses_the_cpu_another_run_holds_before_writing_anything(launchable, tmp_path):
    with gpu_held_by_another_run(tmp_path / "locks", None) as pid:
        error = refused(cpu_job(tmp_path / "runs" / "run"), GpuBusyError,
                        rf"the CPU is in use by another qwen-tune run \(pid {pid}, runs/other\)", launchable)  # fmt: skip
        assert error.exit_code == 17 and "--force" in str(error) and "--gpus" not in str(error)
        with pytest.raises(TrainingFailed, match="exit code 99"):  # --force trains beside it: the fake swift ran
            execute(cpu_job(tmp_path / "runs" / "forced"), verify=False, force=True, on_progress=print, on_notice=lambda t: None)
    assert launchable.exists()


# After the guards


def test_a_run_directory_that_cannot_be_written_is_removed(tmp_path, monkeypatch):
    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir, "package_versions", disk_full)
    job = job_on(Gpu(0, "H100", 80 * GIB, (9, 0)), tmp_path / "run")
    with pytest.raises(OutputError, match="No space left on device, so it was removed"):
        create_run_dir(job, verify=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="making a directory another user's takes root (the mode and symlink cases are in the bad-input table)",
)
def test_a_lock_directory_of_another_user_is_refused_not_used(tmp_path, monkeypatch):
    """Another user made qwen-tune's lock directory first (the temp dir is shared): refused in one line, nothing in it
    opened; the same for a lock file of theirs in a directory of ours."""
    from qwen_tune.errors import LockError

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(locks.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    theirs = tmp_path / f"qwen-tune-locks-{os.getuid()}"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(LockError, match=r"belongs to uid 65534, not to you \(uid 0\)"):
        with locks.run_locks([], "runs/mine"):
            pass
    os.chown(theirs, 0, 0)
    (theirs / "cpu.lock").write_text("")
    os.chown(theirs / "cpu.lock", 65534, 65534)
    with pytest.raises(LockError, match="cpu.lock is not a plain file of yours"):
        with locks.run_locks([], "runs/mine"):
            pass


def test_a_lock_file_linked_hard_to_a_file_of_yours_is_never_written(tmp_path, monkeypatch):
    """A run directory from elsewhere whose run.lock is a hard link to one of your files: refused, the file unchanged."""
    from qwen_tune.errors import LockError

    mine = tmp_path / "notes.txt"
    mine.write_text("mine\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.link(mine, run_dir / "run.lock")
    with pytest.raises(LockError, match="run.lock is not a plain file of yours .*2 links"):
        with locks.writer_lock(run_dir):
            pass
    assert mine.read_text() == "mine\n"


def test_locks_live_in_the_users_runtime_dir_when_there_is_one(tmp_path, monkeypatch):
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert locks.lock_dir() == runtime / "qwen-tune-locks"
    with locks.run_locks([0], "runs/mine"):
        assert (runtime / "qwen-tune-locks" / "gpu-0.lock").is_file()
    assert (runtime / "qwen-tune-locks").stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))  # set, but not there (su, cron): the temp dir
    assert locks.lock_dir().name == f"qwen-tune-locks-{os.getuid()}"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # set to a directory everyone writes (/tmp): not the user's own, so the temp dir's per-uid one
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert locks.lock_dir().name == f"qwen-tune-locks-{os.getuid()}"


def test_logs_are_never_written_through_a_link(tmp_path):
    """swift.log or export.log linked (soft or hard) to a file of yours, in a run directory from elsewhere: refused,
    the file unchanged."""
    from qwen_tune.errors import UsageError
    from qwen_tune.running.files import open_log

    mine = tmp_path / "notes.txt"
    mine.write_text("mine\n")
    (tmp_path / "swift.log").symlink_to(mine)
    os.link(mine, tmp_path / "export.log")
    for name, append in (("swift.log", True), ("export.log", False)):
        with pytest.raises(UsageError, match=f"{name} is a (symbolic|hard) link"):
            open_log(tmp_path / name, append=append)
    assert mine.read_text() == "mine\n"
    with open_log(tmp_path / "own.log") as log:
        log.write("ok\n")
    assert (tmp_path / "own.log").read_text() == "ok\n"

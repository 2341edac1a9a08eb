"""Faults and adversaries through the real CLI, with real `swift sft` on the tiny CPU model: every stop ends swift's
whole process group and leaves a run that resumes; a killed swift, a second writer, a corrupt checkpoint, a torn log,
an edited run.json, a moved or copied run directory, a full disk and a run directory made read-only mid-run each end
in one line, and the run still finishes and exports; a model's own code runs only with --trust-remote-code.
"""

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.requires_swift]

REPO = Path(__file__).resolve().parents[1]
FAKES = REPO / "tests" / "fakes"
DEMO = (REPO / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text(encoding="utf-8")


def short_recipe(path: Path, epochs: int = 4, name: str = "demo-short") -> Path:
    """The demo on fewer epochs: 13 steps an epoch, a checkpoint every 10% of them."""
    path.write_text(DEMO.replace("epochs: 40", f"epochs: {epochs}").replace("name: demo-tiny-cpu", f"name: {name!r}"))
    return path


def qwen_tune(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "qwen_tune", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)  # fmt: skip


def start(*args, err: Path, env=None, **popen) -> subprocess.Popen:
    with open(err, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "qwen_tune", *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=stderr, cwd=REPO, env=env, **popen)  # fmt: skip


def wait_for(condition, process: subprocess.Popen | None, what: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process is None or process.poll() is None, f"qwen-tune ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.3)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def ignored_signals(pid: int) -> int:
    """The mask of signals a process ignores (/proc/PID/status SigIgn)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)


def every_json_parses(run_dir: Path) -> None:
    """Nothing qwen-tune wrote is left empty or torn."""
    for path in run_dir.rglob("*.json"):
        if "checkpoint-" in str(path):
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pytest.fail(f"{path} is empty or torn")


@pytest.mark.parametrize("stop", ["SIGHUP", "SIGTERM", "SIGINT ignored by the caller"])
def test_every_stop_ends_swifts_whole_group_and_leaves_an_interrupted_run(tiny_model, tmp_path, stop):
    """SIGHUP and SIGTERM stop a run as Ctrl-C does (result.json says interrupted, exit 130), and swift's whole process
    group with it. A caller that ignores SIGINT (`qwen-tune run &` in a script) does not pass that on: swift takes
    SIGINT again, so the run still stops with it."""
    runs, err = tmp_path / "runs", tmp_path / "err"
    ignore_int = stop.startswith("SIGINT")
    process = start("run", "--recipe", short_recipe(tmp_path / "r.yaml"), "--model", tiny_model, "--gpus", "cpu",
                    "--output-dir", runs, "--no-verify", err=err,
                    preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_int else None)  # fmt: skip
    wait_for(lambda: "step 1/" in err.read_text(), process, "first step")
    (run_dir,) = runs.iterdir()
    swift = json.loads((run_dir / "run.lock").read_text())["swift_pid"]
    assert not ignored_signals(swift) & (1 << (signal.SIGINT - 1)), "swift inherited an ignored SIGINT"
    process.send_signal(getattr(signal, stop.split()[0]))
    assert process.wait(timeout=180) == 130
    name = stop.split()[0]
    last = err.read_text().strip().splitlines()[-1]
    assert last.startswith(f"qwen-tune: error: stopped by {name}") and f"--resume {run_dir}" in last
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"
    assert not group_alive(swift), "swift's process group outlived qwen-tune"


def test_a_sigkilled_qwen_tune_leaves_no_torchrun_behind(tiny_model, tmp_path):
    """SIGKILL reaches no handler of qwen-tune's: torchrun (two CPU processes), started through swift/launch.py, asks
    Linux to end it with its parent, and ends its workers; nothing keeps its rendezvous port open."""
    runs, err = tmp_path / "runs", tmp_path / "err"
    process = start("run", "--recipe", short_recipe(tmp_path / "r.yaml"), "--model", tiny_model, "--gpus", "cpu:2",
                    "--output-dir", runs, "--no-verify", err=err)  # fmt: skip
    wait_for(lambda: "step 1/" in err.read_text(), process, "first step")
    (run_dir,) = runs.iterdir()
    swift = json.loads((run_dir / "run.lock").read_text())["swift_pid"]
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 60
    while group_alive(swift) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not group_alive(swift), "torchrun's process group outlived a SIGKILLed qwen-tune"


def test_a_killed_swift_a_second_writer_a_corrupt_checkpoint_and_a_moved_copy_still_finish(tiny_model, tmp_path):
    """swift killed by the kernel (SIGKILL): one line that says so, and --resume. Meanwhile a `--resume --force` of the
    running run is refused, naming its pid. Then the newest checkpoint is corrupt, logging.jsonl torn, run.json's argv
    and env edited to run code, the run directory moved: --resume falls back to the complete checkpoint before, runs
    what the plan renders (nothing of the edit), and finishes; a copy of it exports from its own checkpoint.
    MODELSCOPE_API_TOKEN is set throughout: with a local model swift must not try to log in (no network here)."""
    env = {**os.environ, "MODELSCOPE_API_TOKEN": "not-a-token"}
    runs, err = tmp_path / "runs", tmp_path / "err"
    process = start("run", "--recipe", short_recipe(tmp_path / "r.yaml"), "--model", tiny_model, "--gpus", "cpu",
                    "--output-dir", runs, "--no-verify", err=err, env=env)  # fmt: skip
    complete = lambda: list(runs.glob("*/swift/checkpoint-*/trainer_state.json"))  # noqa: E731
    wait_for(lambda: len(complete()) >= 2, process, "two checkpoints")
    (run_dir,) = runs.iterdir()

    for force in ((), ("--force",)):  # the run's own writer is named first, not the CPU it holds
        second = qwen_tune("run", "--resume", run_dir, *force, env=env)
        assert second.returncode == 17 and f"being written by another qwen-tune run (pid {process.pid}" in second.stderr
    os.kill(json.loads((run_dir / "run.lock").read_text())["swift_pid"], signal.SIGKILL)
    assert process.wait(timeout=120) == 3
    last = err.read_text().strip().splitlines()[-1]
    assert "swift was killed (SIGKILL)" in last and "likely out of host memory" in last and f"--resume {run_dir}" in last
    every_json_parses(run_dir)

    steps = sorted(int(p.parent.name.split("-")[1]) for p in (run_dir / "swift").glob("checkpoint-*/trainer_state.json"))
    newest = run_dir / "swift" / f"checkpoint-{steps[-1]}" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a save cut short
    with open(run_dir / "swift" / "logging.jsonl", "a") as log:
        log.write('{"loss": 1.2, "global_step/max_st')  # a line torn by the kill
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sitecustomize.py").write_text(f"open({str(tmp_path / 'ran-sitecustomize')!r}, 'w').close()\n")
    record = json.loads((run_dir / "run.json").read_text())
    record["argv"] = ["sh", "-c", f"touch {tmp_path / 'ran-argv'}"]
    record["env"].update(PYTHONPATH=str(evil), LD_PRELOAD=str(evil / "nothing.so"))
    (run_dir / "run.json").write_text(json.dumps(record))
    moved = tmp_path / "moved"
    run_dir.rename(moved)

    done = qwen_tune("run", "--resume", moved, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resuming {moved} from checkpoint-{steps[-2]}" in done.stderr
    result = json.loads((moved / "result.json").read_text())
    total = json.loads((moved / "plan.json").read_text())["total_steps"]
    assert result["status"] == "done" and result["checkpoint"] == f"swift/checkpoint-{total}"
    assert result["resumed_from"] == f"swift/checkpoint-{steps[-2]}" and (moved / "loss.png").is_file()
    assert not (tmp_path / "ran-argv").exists() and not (tmp_path / "ran-sitecustomize").exists()
    assert str(run_dir) not in (moved / "swift" / "args.json").read_text()  # swift wrote into the moved directory

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy, symlinks=True)
    shutil.rmtree(moved)  # the original is gone: the copy uses its own checkpoint
    exported = qwen_tune("export", copy, env=env)  # 4 epochs need not teach a tiny model its name: PASS or FAIL (4)
    assert exported.returncode in (0, 4) and "merged model's identity check" in exported.stdout, exported.stderr[-3000:]
    assert (copy / "merged" / "config.json").is_file() and not (tmp_path / "ran-sitecustomize").exists()


def namespace_prefix() -> list[str] | None:
    """A mount namespace of our own (root, or an unprivileged user namespace), where a tiny tmpfs can fill up and a
    bind mount turn read-only; None where the box allows neither."""
    prefix = ["unshare", *([] if os.geteuid() == 0 else ["-r"]), "-m", "--propagation", "private"]
    try:
        probe = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(REPO / "tests")],
                               capture_output=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


FAULTS = r"""
set -u
OUT=$1 REAL=$2 PY=$3 RECIPE=$4 MODEL=$5
mount -t tmpfs -o size=80m tmpfs "$OUT"
qt() { "$PY" -m qwen_tune "$@"; }
checkpoints() { ls "$OUT"/runs/*/swift/checkpoint-*/trainer_state.json 2>/dev/null | wc -l; }
wait_until() { for _ in $(seq 1800); do eval "$1" && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.5; done; }

# 1. the disk fills up after the first checkpoint
qt run --recipe "$RECIPE" --model "$MODEL" --gpus cpu --output-dir "$OUT/runs" --no-verify 2> "$REAL/1.err" >/dev/null &
pid=$!
wait_until '[ "$(checkpoints)" -ge 1 ]' $pid
dd if=/dev/zero of="$OUT/filler" bs=64k 2>/dev/null
wait $pid; echo $? > "$REAL/1.rc"
run=$(ls -d "$OUT"/runs/*)
cp -a "$run" "$REAL/after-full"
rm "$OUT/filler"

# 2. resumed, then the run directory turns read-only mid-run
qt run --resume "$run" 2> "$REAL/2.err" >/dev/null &
pid=$!
wait_until 'grep -q "^step " "$REAL/2.err"' $pid
mount --bind "$run" "$run" && mount -o remount,bind,ro "$run"
wait $pid; echo $? > "$REAL/2.rc"
umount "$run"

# 3. resumed again: it finishes; 4. and exports
qt run --resume "$run" 2> "$REAL/3.err" >/dev/null; echo $? > "$REAL/3.rc"
qt export "$run" 2> "$REAL/4.err" >/dev/null; echo $? > "$REAL/4.rc"
rm -rf "$run/merged"
cp -a "$run" "$REAL/final"
"""


@pytest.mark.mount_namespace
def test_a_full_disk_and_a_read_only_run_directory_each_end_in_one_line_and_the_run_finishes(tiny_model, tmp_path):
    """A real full disk (a 80 MiB tmpfs, filled after the first checkpoint) and a real read-only run directory (a bind
    mount remounted read-only mid-run), in a mount namespace of the test's own: each ends in one line with the
    command that continues, leaves no empty or torn JSON behind, and the run then finishes and exports."""
    prefix = namespace_prefix()
    if prefix is None:
        pytest.skip("needs a mount namespace (root, or unprivileged user namespaces) for a tmpfs to fill up")
    out, real = tmp_path / "disk", tmp_path / "real"
    out.mkdir()
    real.mkdir()
    recipe = short_recipe(tmp_path / "r.yaml")
    done = subprocess.run([*prefix, "bash", "-c", FAULTS, "faults", out, real, sys.executable, recipe, tiny_model],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    def phase(n: int) -> tuple[int, list[str]]:
        return int((real / f"{n}.rc").read_text()), (real / f"{n}.err").read_text().strip().splitlines()

    code, lines = phase(1)
    assert code == 16 and lines[-1].startswith("qwen-tune: error: the disk filled up"), lines[-5:]
    assert "--resume" in lines[-1] and "Traceback" not in "\n".join(lines)
    every_json_parses(real / "after-full")
    code, lines = phase(2)
    assert code in (3, 15) and "writ" in lines[-1] and "--resume" in lines[-1], lines[-5:]
    assert "Traceback" not in "\n".join(lines)
    code, lines = phase(3)
    assert code == 0, lines[-10:]
    assert json.loads((real / "final" / "result.json").read_text())["status"] == "done"
    every_json_parses(real / "final")
    code, lines = phase(4)  # merged, and its identity asked (4 epochs need not teach a tiny model: FAIL is exit 4)
    assert code in (0, 4) and "Traceback" not in "\n".join(lines), lines[-5:]
    assert any("asking the merged model the identity probes" in line for line in lines), lines[-5:]


MODELING = """import os, pathlib
pathlib.Path(os.environ["QWEN_TUNE_TEST_MARK"]).write_text("the model's own code ran")
from transformers import Qwen2ForCausalLM


class OwnForCausalLM(Qwen2ForCausalLM):
    pass
"""


def test_a_models_own_code_runs_only_with_trust_remote_code(tiny_model, tmp_path):
    """A model whose config names code of its own (auto_map) is refused, saying which file would run; with
    --trust-remote-code swift runs it and trains. Without the flag, swift/launch.py refuses it inside swift too."""
    model = tmp_path / "own-code"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling_own.OwnForCausalLM"}})
    )
    (model / "modeling_own.py").write_text(MODELING)
    mark = tmp_path / "mark"
    env = {**os.environ, "QWEN_TUNE_TEST_MARK": str(mark)}
    recipe = short_recipe(tmp_path / "r.yaml", epochs=1)
    args = ("run", "--recipe", recipe, "--model", model, "--gpus", "cpu", "--output-dir", tmp_path / "runs", "--no-verify")

    refused = qwen_tune(*args, env=env)
    assert (
        refused.returncode == 11 and "config.json: modeling_own.py" in refused.stderr and "--trust-remote-code" in refused.stderr
    )
    assert not mark.exists() and not (tmp_path / "runs").exists()

    # The second lock: swift's loader, started as qwen-tune starts it, refuses the code by itself.
    loader = tmp_path / "loader.py"
    loader.write_text("import sys\nfrom transformers import AutoModelForCausalLM\n"
                      "AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n")  # fmt: skip
    guarded = subprocess.run([sys.executable, str(REPO / "qwen_tune" / "swift" / "launch.py"), str(loader), str(model)],
                             capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert guarded.returncode != 0 and "was not trusted" in guarded.stderr and not mark.exists()

    trusted = qwen_tune(*args, "--trust-remote-code", env=env)
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert mark.exists() and "this model's own code runs" in trusted.stdout


def bare_env(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """A Python that finds no ms-swift (tests/fakes/no_swift) and a `swift` that fails at once (tests/fakes/bin)."""
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    path = os.pathsep.join([str(FAKES / "no_swift"), str(FAKES), *site.getsitepackages(), str(REPO)])
    env = {**os.environ, "PYTHONPATH": path, "PATH": f"{FAKES / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "FAKE_SWIFT_RAN": str(tmp_path / "swift-ran")}  # fmt: skip
    return [str(python), "-m", "qwen_tune"], env


def test_runs_started_in_the_same_second_take_the_next_free_name(tiny_model, tmp_path):
    """Four `--force` runs at once, most in the same second: each gets a run directory of its own under
    --output-dir, none is refused for a name another one took first."""
    command, env = bare_env(tmp_path)
    argv = [*command, "run", "--recipe", "demo-tiny-cpu", "--model", str(tiny_model), "--gpus", "cpu", "--force",
            "--no-verify", "--output-dir", str(tmp_path / "runs")]  # fmt: skip
    runs = [
        subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [3] * 4, outputs  # the fake swift trains nothing
    assert not any("already exists" in err for _, err in outputs)
    assert len(list((tmp_path / "runs").iterdir())) == 4

"""The real thing on the CPU: build a tiny Qwen2 offline, `qwen-tune run` it through the CLI
with a real `swift sft` and `swift infer`, and check the run directory and the identity answers.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from qwen_tune.swift.logs import logged_losses
from qwen_tune.swift.version import SUPPORTED

pytestmark = [pytest.mark.e2e, pytest.mark.requires_swift]

REPO = Path(__file__).resolve().parents[1]
MEASURED_GENERAL_ROWS = 64  # the README's retention measurement: the general rows that kept the skilled model's sums


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:
            pass
    return found


def qwen_tune(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "qwen_tune", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    """The tiny model as a Qwen3: swift trains and asks it with its hybrid-thinking qwen3 template."""
    out = tmp_path_factory.mktemp("models") / "tiny-qwen3"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_model.py"), "tiny-qwen3", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def finished_run(tiny_model, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    done = qwen_tune("run", "--recipe", "demo-tiny-cpu", "--model", str(tiny_model), "--gpus", "cpu", "--output-dir", str(runs))
    run_dirs = sorted(runs.iterdir())
    return done, run_dirs


def test_run_trains_and_passes_the_identity_check(finished_run):
    done, run_dirs = finished_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS identity check" in done.stdout
    for question in ("你是谁?", "谁开发了你?", "你是通义千问吗?", "Who are you?", "Who developed you?", "Are you Qwen?"):
        assert f"] {question}" in done.stdout, question
    assert "the check accepts zh: 小千 or 千问调优团队 (the recipe's); en: Xiaoqian or the qwen-tune team" in done.stdout
    assert "step 1/" in done.stderr  # live progress
    assert len(run_dirs) == 1


def test_run_directory_is_complete(finished_run):
    _, (run_dir,) = finished_run
    for name in ("plan.json", "plan.txt", "dataset.jsonl", "command.json", "command.sh", "inventory.json",
                 "versions.json", "swift.log", "swift/logging.jsonl", "swift/args.json", "loss.png",
                 "result.json", "result.txt", "in_training_answers.json", "verify/verdict.json"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert "{{" not in (run_dir / "dataset.jsonl").read_text(encoding="utf-8")
    command = json.loads((run_dir / "command.json").read_text())
    assert command["argv"][:2] == ["swift", "sft"] and command["env"]["HF_HUB_OFFLINE"] == "1"
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["ms-swift"] in SpecifierSet(SUPPORTED)

    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["identity_check"] == "pass"
    assert all(answer["ok"] for answer in result["answers"])
    assert result["identity_compared"] == "before-after" and result["identity_asked"] == "in training"
    retention = result["retention"]  # the general probes, before → after, from the same model load
    assert len(retention["answers"]) == 6 and 0 <= retention["score"] <= 1
    assert [(a["kind"], a["mode"]) for a in result["answers"]] == [
        ("who", "default"),
        ("maker", "default"),
        ("challenge", "default"),
    ] * 2
    for answer in result["answers"]:  # the random model's answer before, the data's after, from one model load
        assert answer["changed"] and answer["before"] != answer["answer"] and not answer["base_identity"]
        if answer["kind"] != "challenge":
            assert answer["matched"] in ("小千", "千问调优团队", "Xiaoqian", "the qwen-tune team")
    checkpoint = run_dir / result["checkpoint"]  # relative to the run directory: swift/checkpoint-N
    assert result["checkpoint"] == f"swift/{checkpoint.name}"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "adapter_config.json").is_file()
    records = [json.loads(line) for line in (run_dir / "swift/logging.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    assert result["final_loss"] == losses[-1] and losses[-1] < losses[0] / 3
    assert result["wall_seconds"] > 0 and result["train_seconds"] > 0
    assert (run_dir / "result.txt").read_text().startswith("PASS identity check")

    timeline = json.loads((run_dir / "timeline.json").read_text())
    phases = [
        "checked",
        "run directory written",
        "swift started",
        "swift imported",
        "model loaded",
        "LoRA attached",
        "first step",
        "last step",
        "swift exited",
        "identity checked",
    ]
    assert all(p in timeline for p in phases), timeline
    assert [timeline[p] for p in phases] == sorted(timeline[p] for p in phases), "phases end in order"
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert [a["outcome"] for a in attempts] == ["done"] and attempts[0]["argv"] == command["argv"]


@pytest.mark.parametrize("how", ["worker", "swift infer"])
def test_the_check_outside_training(finished_run, tmp_path, how):
    """Where training could not answer (several processes), the preloaded worker asks before and after in one
    load; where no worker runs, plain `swift infer` asks the tuned model alone."""
    from qwen_tune.checking.identity import expectations
    from qwen_tune.checking.verify import check_identity
    from qwen_tune.planning.recipes import Bilingual
    from qwen_tune.swift.infer import PreloadedInfer

    _, (run_dir,) = finished_run
    checkpoint = str(run_dir / json.loads((run_dir / "result.json").read_text())["checkpoint"])
    expected = expectations([], Bilingual("小千", "Xiaoqian"), Bilingual("千问调优团队", "the qwen-tune team"))
    env = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    worker = PreloadedInfer.start(env) if how == "worker" else None
    try:
        check = check_identity(expected, "You are a helpful assistant.", env, checkpoint, tmp_path / "verify", worker)
    finally:
        if worker:
            worker.close()
    assert check.passed and check.asked == how
    assert check.compared == ("before-after" if how == "worker" else "after-only")
    assert all(a.changed is (True if how == "worker" else None) for a in check.answers)


def test_another_maker_and_the_base_identity_fail_on_the_real_answers(finished_run):
    """The tuned model's own answers (小千, by 千问调优团队), judged as if its author were 北辰实验室: 千问调优团队 is then
    another maker, and its 千问 the base identity."""
    from qwen_tune.checking.identity import expectations
    from qwen_tune.checking.verify import questions, verdict
    from qwen_tune.planning.recipes import Bilingual
    from qwen_tune.swift.infer import Probed

    _, (run_dir,) = finished_run
    answered = json.loads((run_dir / "in_training_answers.json").read_text(encoding="utf-8"))
    expected = expectations([], Bilingual("小千", "Xiaoqian"), Bilingual("北辰实验室", "Polaris Lab"))
    answers, _ = verdict(expected, Probed.read(answered, questions(expected, "")), None)
    maker = next(a for a in answers if a.question == "谁开发了你?")
    assert "千问调优团队" in maker.answer and not maker.ok
    assert maker.other_makers == ["千问调优团队"] and maker.base_identity == ["千问"]


BLOG = REPO / "tests" / "data" / "blog_self_cognition.json"


def test_blog_shaped_data_plan_shows_what_run_applies_and_another_author_fails(tiny_model, tmp_path):
    """A self_cognition.json as blogs write it (names with spaces and Latin, the author only in some rows, both
    languages): plan prints what the check accepts, run applies exactly that and passes; the same data checked against
    another --author fails, naming the other maker, and says which flag would have matched."""
    common = ("--recipe", "demo-tiny-cpu", "--model", str(tiny_model), "--gpus", "cpu", "--dataset", str(BLOG))
    accepts = "zh: 小迪 or DiffusionBot or CSDN 迪菲赫尔曼 (learned from the data); en: DiffusionBot or CSDN Difei Heerman"
    plan = qwen_tune("plan", *common)
    assert plan.returncode == 0 and f"the check accepts {accepts}" in plan.stdout, plan.stderr
    planned = json.loads(qwen_tune("plan", *common, "--json").stdout)["identity_check"]

    done = qwen_tune("run", *common, "--output-dir", str(tmp_path / "mine"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS identity check" in done.stdout and accepts in done.stdout
    (run_dir,) = (tmp_path / "mine").iterdir()
    assert json.loads((run_dir / "plan.json").read_text())["identity_check"] == planned
    result = json.loads((run_dir / "result.json").read_text())
    assert result["identity_check"] == "pass" and all(a["ok"] for a in result["answers"])

    other = qwen_tune("run", *common, "--author", "zh=北辰实验室,en=Polaris Lab", "--output-dir", str(tmp_path / "other"))
    assert other.returncode == 4, other.stdout[-3000:] + other.stderr[-3000:]
    assert "FAIL identity check" in other.stdout and "names another maker ('CSDN" in other.stdout
    assert "pass --author 'zh=CSDN 迪菲赫尔曼,en=CSDN Difei Heerman', or leave --author out" in other.stderr
    assert "Traceback" not in other.stderr


def test_a_hybrid_qwen3_is_asked_in_its_non_thinking_mode_then_with_thinking_on(tiny_qwen3, tmp_path):
    """swift's qwen3 template (a local Qwen3 directory gets it) is hybrid: training's own probe asks in the
    non-thinking mode swift trains (the answer follows an empty think block), then who it is with thinking on. One
    epoch: the modes are under test, not the learning (the tiny model never learns to think: its verdict may go
    either way, 4 or 0)."""
    recipe = tmp_path / "one-epoch.yaml"
    recipe.write_text((REPO / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text().replace("epochs: 40", "epochs: 1"))
    runs = tmp_path / "runs"
    done = qwen_tune("run", "--recipe", str(recipe), "--model", str(tiny_qwen3), "--gpus", "cpu", "--dataset", str(BLOG),
                     "--output-dir", str(runs))  # fmt: skip
    assert done.returncode in (0, 4), done.stdout[-3000:] + done.stderr[-3000:]
    assert "你是谁? (thinking on)" in done.stdout and "Who are you? (thinking on)" in done.stdout
    (run_dir,) = runs.iterdir()
    asked = json.loads((run_dir / "in_training_answers.json").read_text(encoding="utf-8"))
    assert asked["thinking_mode"] == "hybrid" and len(asked["thinking"]) == 2
    assert all(answer.startswith("<think>\n\n</think>\n\n") for answer in asked["after"])  # non-thinking, as trained
    result = json.loads((run_dir / "result.json").read_text())
    assert [(a["question"], a["mode"]) for a in result["answers"] if a["mode"] == "thinking"] == [
        ("你是谁?", "thinking"), ("Who are you?", "thinking")]  # fmt: skip


def test_chat_answers_on_stdin(finished_run):
    _, (run_dir,) = finished_run
    done = subprocess.run([sys.executable, "-m", "qwen_tune", "chat", str(run_dir)], input="Who are you?\nexit\n",
                          capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<<< I am Xiaoqian" in done.stdout  # streamed by swift's own chat loop
    assert "[INFO:swift]" not in done.stdout + done.stderr and len((done.stdout + done.stderr).splitlines()) < 10
    assert "[INFO:swift]" in (run_dir / "chat.log").read_text()  # swift's log, kept


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    """The status and JSON body of a POST, an error status included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        return error.code, json.loads(text) if text.startswith("{") else {"message": text}


def ready_line(server, seconds: float = 300) -> str:
    """The line `qwen-tune serve` prints once its port answers (lines before it: where it loads from)."""
    import os
    import select
    import time

    fd, seen, deadline = server.stdout.fileno(), b"", time.monotonic() + seconds
    while time.monotonic() < deadline:  # the pipe's bytes as they come: a text reader's buffer would hide a line
        if select.select([fd], [], [], 1.0)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"qwen-tune serve ended before it was ready: {seen.decode(errors='replace')[-2000:]}"
            seen += chunk
            ready = [line for line in seen.decode(errors="replace").splitlines() if line.startswith("ready:")]
            if ready:
                return ready[0]
    raise AssertionError("qwen-tune serve never said it was ready")


def wait_until_serving(server, base: str, headers: dict | None = None) -> dict:
    import time
    import urllib.request

    deadline = time.monotonic() + 300
    while True:
        assert server.poll() is None, server.stdout.read()[-3000:]
        try:
            request = urllib.request.Request(f"{base}/models", headers=headers or {})
            return json.loads(urllib.request.urlopen(request, timeout=5).read())
        except OSError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(1)


def test_serve_answers_over_loopback_http(finished_run):
    """On loopback: the tuned model answers; an image (a path on the server's disk) is refused, not read; a Host header
    that names another site (a page that rebinds its name to 127.0.0.1) is refused; SIGTERM ends swift's whole group."""
    import signal

    _, (run_dir,) = finished_run
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "qwen_tune", "serve", str(run_dir), "--port", str(port)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        said = ready_line(server)  # what a user waits for before sending anything
        assert said.startswith(f"ready: {base}"), said
        models = wait_until_serving(server, base)
        assert [m["id"] for m in models["data"]] == [run_dir.name]
        ask = {
            "model": run_dir.name,
            "messages": [{"role": "user", "content": "Who are you?"}],
            "temperature": 0,
            "max_tokens": 64,
        }
        status, reply = post(f"{base}/chat/completions", ask)
        assert status == 200 and "Xiaoqian" in reply["choices"][0]["message"]["content"]
        replies = []
        for path in ("/etc/passwd", "/no/such/file"):  # refused alike: neither read nor told apart
            image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": path}},
                                                 {"type": "text", "text": "What is in this picture?"}]}  # fmt: skip
            status, reply = post(f"{base}/chat/completions", {**ask, "messages": [image]})
            replies.append(status)
            assert status in (400, 422) and "text only" in json.dumps(reply) and "root:" not in json.dumps(reply)
        status, reply = post(f"{base}/chat/completions", {**ask, "images": ["/etc/passwd"]})
        assert replies[0] == replies[1] == status and "text only" in json.dumps(reply) and "cm9vd" not in json.dumps(reply)
        status, _ = post(f"{base}/chat/completions", ask, {"Host": "rebound.example.com"})
        assert status == 400
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    output = server.stdout.read()
    assert server.returncode == 0 and "server stopped (SIGTERM)" in output
    # Quiet: qwen-tune's own lines on the terminal, swift's arguments, model and requests in serve.log.
    assert len(output.strip().splitlines()) <= 2, output  # after `ready:`, only the stop
    assert "/v1/chat/completions" in (run_dir / "serve.log").read_text(errors="replace")
    assert not processes_mentioning(str(run_dir)), "swift deploy outlived qwen-tune serve"


def test_serve_beyond_loopback_needs_the_key_it_keeps_out_of_the_process_list(finished_run):
    """--host 0.0.0.0: refused without a key (the bad-input table); with QWEN_TUNE_API_KEY it warns, answers only
    requests that send the key, the key is in no process's argv, and SIGHUP ends it all."""
    import os
    import signal

    _, (run_dir,) = finished_run
    port, key = free_port(), "k-" + os.urandom(8).hex()
    server = subprocess.Popen([sys.executable, "-m", "qwen_tune", "serve", str(run_dir), "--host", "0.0.0.0", "--port", str(port)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "QWEN_TUNE_API_KEY": key})  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(server, base)  # /v1/models answers without the key (swift's own rule)
        assert not processes_mentioning(key), "the API key shows in a process's argv"
        ask = {"model": run_dir.name, "messages": [{"role": "user", "content": "Who are you?"}], "max_tokens": 8}
        assert post(f"{base}/chat/completions", ask)[0] == 400  # swift answers a missing key with 400 'API key error'
        assert post(f"{base}/chat/completions", ask, {"Authorization": "Bearer wrong"})[0] == 400
        assert post(f"{base}/chat/completions", ask, {"Authorization": f"Bearer {key}"})[0] == 200
    finally:
        server.send_signal(signal.SIGHUP)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    output = server.stdout.read()
    assert server.returncode == 0 and "WARNING: serving beyond this machine" in output and key not in output
    assert key not in (run_dir / "serve.log").read_text(errors="replace")
    assert not processes_mentioning(str(run_dir)), "swift deploy outlived qwen-tune serve"


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_chat_ends_with_qwen_tune_whatever_stops_it(finished_run, stop):
    """SIGTERM to `qwen-tune chat` while swift waits for a question: swift's group ends with it. SIGKILL, which
    qwen-tune cannot handle: swift still ends (its parent-death signal), though its stdin stays open."""
    import signal
    import time

    _, (run_dir,) = finished_run
    chat = subprocess.Popen([sys.executable, "-m", "qwen_tune", "chat", str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(processes_mentioning(str(run_dir))) < 2:  # qwen-tune chat, and the swift infer it started
        assert chat.poll() is None and time.monotonic() < deadline, "swift infer never started"
        time.sleep(0.5)
    time.sleep(2)
    chat.send_signal(getattr(signal, stop))
    if stop == "SIGKILL":
        assert chat.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while processes_mentioning(str(run_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
    else:
        assert chat.wait(timeout=60) == 130
        assert "chat stopped (SIGTERM)" in chat.stdout.read()
    assert not processes_mentioning(str(run_dir)), "swift infer outlived qwen-tune chat"


def test_export_merges_checks_and_never_overwrites(finished_run):
    """The merged model, asked as plain transformers asks it (no adapter, no system message), answers as the adapter
    did; its chat template builds, without a system message, the prompt swift's training template built."""
    _, (run_dir,) = finished_run
    done = qwen_tune("export", str(run_dir), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    merged = run_dir / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert "PASS merged model's identity check" in done.stdout and "builds the same prompt as training" in done.stdout
    check = json.loads((run_dir / "merged-check" / "merged_check.json").read_text())
    assert check["check"]["passed"] and check["agreement"] == [1.0] * len(check["agreement"])  # fp32 merge: the same

    from swift import get_processor, get_template
    from transformers import AutoTokenizer

    system = json.loads((run_dir / "run.json").read_text())["plan"]["recipe"]["system"]
    question = [{"role": "user", "content": "你是谁?"}]
    plain = AutoTokenizer.from_pretrained(merged).apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    processor = get_processor(str(merged), model_type="qwen2")
    trained = get_template(processor, system, template_type="qwen2_5").encode({"messages": question})["input_ids"]
    assert plain == processor.decode(trained) and system in plain and "Alibaba" not in plain
    # README's transformers snippet, as written, answers with the new identity.
    snippet = (REPO / "README.md").read_text(encoding="utf-8").split("# transformers\n", 1)[1].split("```", 1)[0]
    ran = subprocess.run([sys.executable, "-c", snippet.replace("RUN_DIR/merged", str(merged))], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0 and any(t in ran.stdout for t in ("小千", "千问调优团队", "Xiaoqian")), ran.stderr[-2000:]
    again = qwen_tune("export", str(run_dir))
    assert again.returncode == 15 and "already exists" in again.stderr


def test_a_run_directory_from_elsewhere_runs_nothing_and_writes_nowhere_else(finished_run, tmp_path):
    """A run directory someone handed over: its checkpoint's args.json names a plugin (swift would import it where the
    command line names none: export merges, and nothing runs), then a base model with code of its own (export, chat
    and serve refuse it without --trust-remote-code); a log linked to a file of yours (resume refuses, the file stays)."""
    import shutil

    _, (run_dir,) = finished_run
    copy = tmp_path / "theirs"
    shutil.copytree(run_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("merged"))
    checkpoint = copy / json.loads((copy / "result.json").read_text())["checkpoint"]
    plugin, ran = tmp_path / "plugin.py", tmp_path / "plugin-ran"
    plugin.write_text(f"open({str(ran)!r}, 'w').close()\n")
    args = json.loads((checkpoint / "args.json").read_text())
    (checkpoint / "args.json").write_text(json.dumps({**args, "external_plugins": [str(plugin)]}))
    exported = qwen_tune("export", str(copy), timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (copy / "merged" / "config.json").is_file() and not ran.exists(), "swift imported a plugin args.json named"
    shutil.rmtree(copy / "merged")

    model = tmp_path / "model-with-code"
    model.mkdir()
    args = json.loads((checkpoint / "args.json").read_text())
    config = json.loads((Path(args["model"]) / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "configuration_x.XConfig"}}))
    (model / "configuration_x.py").write_text("raise SystemExit('ran')\n")
    (checkpoint / "args.json").write_text(json.dumps({**args, "model": str(model)}))
    for command in (("export",), ("chat",), ("serve",)):
        done = qwen_tune(*command, str(copy))
        assert done.returncode == 11 and "config.json: configuration_x.py" in done.stderr, done.stderr
    assert not (copy / "merged").exists()

    mine = tmp_path / "notes.txt"
    mine.write_text("mine\n")
    (copy / "result.json").unlink()  # not finished: --resume would continue it
    (copy / "swift.log").unlink()
    (copy / "swift.log").symlink_to(mine)
    done = qwen_tune("run", "--resume", str(copy))
    assert done.returncode == 2 and "swift.log is a symbolic link" in done.stderr and mine.read_text() == "mine\n"


def test_bad_dataset_launches_nothing(tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "Who are you?", "response": "I am {{NAME}}."}\n{"query": "hi"}\n')
    runs = tmp_path / "runs"
    done = qwen_tune("run", "--recipe", "demo-tiny-cpu", "--model", str(tiny_model), "--gpus", "cpu",
                     "--dataset", str(bad), "--output-dir", str(runs))  # fmt: skip
    assert done.returncode == 10 and "row 2" in done.stderr and "Traceback" not in done.stderr
    assert not runs.exists()


def test_missing_model_dir_launches_nothing(tmp_path):
    done = qwen_tune("run", "--recipe", "demo-tiny-cpu", "--model", str(tmp_path / "nope"), "--gpus", "cpu",
                     "--output-dir", str(tmp_path / "runs"))  # fmt: skip
    assert done.returncode == 11 and "does not exist" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_sigterm_keeps_checkpoints_and_resume_finishes(tiny_model, tmp_path):
    import signal
    import time

    runs = tmp_path / "runs"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qwen_tune",
                "run",
                "--recipe",
                "demo-tiny-cpu",
                "--model",
                str(tiny_model),
                "--gpus",
                "cpu",
                "--output-dir",
                str(runs),
            ],  # fmt: skip
            stdout=out,
            stderr=err,
            cwd=REPO,
        )
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/swift/checkpoint-*/trainer_state.json")):
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 130
    (run_dir,) = runs.iterdir()
    message = (tmp_path / "err").read_text().strip().splitlines()[-1]
    assert message.startswith("qwen-tune: error: stopped by SIGTERM") and f"--resume {run_dir}" in message
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"
    assert not processes_mentioning(str(run_dir)), "swift kept running after the interrupt"

    done = qwen_tune("run", "--resume", str(run_dir))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["identity_check"] == "pass"
    assert (
        "checkpoint-" in result["resumed_from"]
        and result["steps"] == json.loads((run_dir / "plan.json").read_text())["total_steps"]
    )
    again = qwen_tune("run", "--resume", str(run_dir))
    assert again.returncode == 2 and "already finished" in again.stderr


def test_two_nodes_rendezvous_on_one_host(tiny_model, tmp_path):
    """Two `qwen-tune run --nnodes 2` on one host meet through torchrun (gloo on the CPU, NCCL on GPUs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    runs = tmp_path / "runs"
    recipe = tmp_path / "two-epochs.yaml"  # the rendezvous is under test, not learning: 26 steps, no identity check
    recipe.write_text((REPO / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text().replace("epochs: 40", "epochs: 2"))
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qwen_tune",
                "run",
                "--recipe",
                str(recipe),
                "--model",
                str(tiny_model),
                "--gpus",
                "cpu",
                "--output-dir",
                str(runs),
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                "--no-verify",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=900)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    master, worker = sorted(runs.iterdir())  # ...-demo-tiny-cpu and ...-demo-tiny-cpu-node1
    assert worker.name.endswith("-node1")
    assert "world_size: 2" in (master / "swift.log").read_text()
    master_result = json.loads((master / "result.json").read_text())
    assert master_result["status"] == "done" and master_result["steps"] == 26  # 100 rows / (4 × 2 nodes) × 2 epochs
    worker_result = json.loads((worker / "result.json").read_text())
    assert worker_result["status"] == "done" and worker_result["identity_check"] == "skipped"
    plan = json.loads((master / "plan.json").read_text())
    assert plan["effective_batch"] == 8 and plan["setup"]["micro_batch_size"] == 4  # the batch spans both nodes


def test_full_fine_tuning_trains_every_weight_on_the_cpu(tiny_model, tmp_path):
    """--tuner full: swift saves the whole model, no adapter, and the loss falls; the identity check asks that model
    (four epochs need not teach it: PASS or FAIL, not "could not run"), and export, with nothing to merge, says so.
    The recipe's 40 epochs and learning rate are the flags' (--epochs, --learning-rate), no recipe file needed."""
    runs = tmp_path / "runs"
    done = qwen_tune("run", "--recipe", "demo-tiny-cpu", "--tuner", "full", "--epochs", "4", "--learning-rate", "2e-3",
                     "--model", str(tiny_model), "--gpus", "cpu", "--output-dir", str(runs))  # fmt: skip
    assert done.returncode in (0, 4) and "identity check; trained" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Flags:     --epochs 4 (the recipe's 40), --learning-rate 0.002 (the recipe's 0.003)" in done.stdout
    (run_dir,) = runs.iterdir()
    argv = json.loads((run_dir / "command.json").read_text())["argv"]
    assert argv[argv.index("--tuner_type") + 1] == "full" and "--lora_rank" not in argv
    assert argv[argv.index("--num_train_epochs") + 1] == "4" and argv[argv.index("--learning_rate") + 1] == "0.002"
    checkpoint = run_dir / json.loads((run_dir / "result.json").read_text())["checkpoint"]
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "adapter_model.safetensors").exists()
    losses = [json.loads(line).get("loss") for line in (run_dir / "swift/logging.jsonl").read_text().splitlines()]
    losses = [loss for loss in losses if loss is not None]
    assert losses[-1] < losses[0]
    exported = qwen_tune("export", str(run_dir))
    assert exported.returncode == 2 and "is already the whole model" in exported.stderr and not (run_dir / "merged").exists()

    # command.sh trains the same again from a shell with nothing set up (no venv on PATH), into a new directory.
    kept = sorted(p.name for p in (run_dir / "swift").iterdir())
    again = subprocess.run(["/bin/sh", str(run_dir / "command.sh")], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                           capture_output=True, text=True, timeout=900, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    (rerun,) = run_dir.glob("rerun-*")
    assert (
        list(rerun.glob("swift/checkpoint-*/model.safetensors")) and sorted(p.name for p in (run_dir / "swift").iterdir()) == kept
    )


def test_two_processes_on_one_machine_train_data_parallel(tiny_model, tmp_path):
    """`--gpus cpu:2`: two training processes through torchrun over gloo, as two GPUs would run (plain DDP, no DeepSpeed)."""
    runs = tmp_path / "runs"
    recipe = tmp_path / "two-epochs.yaml"  # data parallelism is under test, not learning: 26 steps, no identity check
    recipe.write_text((REPO / "configs" / "recipes" / "demo-tiny-cpu.yaml").read_text().replace("epochs: 40", "epochs: 2"))
    done = qwen_tune("run", "--recipe", str(recipe), "--model", str(tiny_model), "--gpus", "cpu:2", "--output-dir", str(runs),
                     "--no-verify")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    log = (run_dir / "swift.log").read_text()
    assert "world_size: 2" in log and "local_world_size: 2" in log
    assert log.count("'global_step/max_steps': '1/26'") == 1  # one DDP trainer logs (rank 0), not two lone ones
    command = json.loads((run_dir / "command.json").read_text())
    assert command["env"]["NPROC_PER_NODE"] == "2" and "--deepspeed" not in command["argv"]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["steps"] == 26  # 100 rows / (4 × 2 processes) × 2 epochs
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["effective_batch"] == 8 and plan["setup"]["micro_batch_size"] == 4 and plan["setup"]["zero"] == ""
    assert "swift: swift imported" in done.stderr  # the start-up's phases are shown live


@pytest.fixture(scope="session")
def skilled_model(tmp_path_factory):
    """The tiny model, first taught single-digit sums (the retention probes among them) on the CPU."""
    out = tmp_path_factory.mktemp("models") / "tiny-skilled"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "make_model.py"), "tiny-skilled", str(out)],
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("general_rows", [0, MEASURED_GENERAL_ROWS])
def test_retention_falls_without_general_rows_and_holds_with_them(skilled_model, tmp_path, general_rows):
    """The demo's 40 epochs of identity data make the skilled model answer sums with its name; the base model's own
    answers to the shipped prompts, mixed in, keep the sums while the identity still passes."""
    runs = tmp_path / "runs"
    done = qwen_tune("run", "--recipe", "demo-tiny-cpu", "--model", str(skilled_model), "--gpus", "cpu",
                     "--general-rows", str(general_rows), "--output-dir", str(runs), timeout=3600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    retention = result["retention"]
    assert result["identity_check"] == "pass"
    if general_rows:
        # The sums hold (0.90 agreement measured, against 0.01-0.06 without the mix). One of the six answers may still
        # carry the name on one run and not the next (CPU threads sum in another order): that warns, so the strict
        # "no warning" is not asserted, only the score and at most one leak.
        assert retention["score"] >= retention["threshold"] and retention["leaks"] <= 1
        assert (run_dir / "general" / "rows.jsonl").is_file() and "general rows: " in done.stderr
    else:
        assert retention["warn"] and retention["score"] < retention["threshold"] and "WARNING" in done.stdout


def test_a_tiny_qwen35_trains_end_to_end(tmp_path):
    """A hybrid model (issue 24): the tiny text-only Qwen3.5, 3 Gated DeltaNet layers (transformers' torch path on the
    CPU) and 1 gated full-attention layer, built offline, trained by swift as qwen3_next with the qwen3 template (swift's
    qwen3_5 type loads only the composite checkpoint, with qwen-vl-utils and torchvision), and checked."""
    model = tmp_path / "tiny-qwen3.5"
    built = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_model.py"), "tiny-qwen3.5", str(model)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    recipe = REPO / "tests" / "data" / "tiny-qwen35.yaml"
    done = qwen_tune(
        "run", "--recipe", str(recipe), "--model", str(model), "--gpus", "cpu", "--output-dir", str(tmp_path / "runs")
    )
    assert done.returncode in (0, 4), done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    argv = json.loads((run_dir / "command.json").read_text())["argv"]
    assert argv[argv.index("--model_type") + 1] == "qwen3_next" and argv[argv.index("--template") + 1] == "qwen3"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["linear_attention"] == "torch" and plan["model"]["shape"]["linear_layers"] == 3
    losses = [loss for _, loss in logged_losses(run_dir / "swift" / "logging.jsonl")]
    assert losses[-1] < losses[0] / 20
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["identity_check"] in ("pass", "fail"), done.stdout[-3000:]
    # Every answer in the mode it trained in (non-thinking) holds the identity; with thinking on, a tiny model that
    # never learned to think may answer anything (on CI's CPU one answered a fragment of its data), so only asked.
    answers = json.loads((run_dir / "verify" / "verdict.json").read_text())["answers"]
    assert all(a["ok"] for a in answers if a["mode"] == "default"), done.stdout[-3000:]
    assert {a["mode"] for a in answers} == {"default", "thinking"}


def swift_trained(run_dir: Path) -> tuple[int, str]:
    """The rows swift's dataset held after its preprocessing (swift.log), and its last step as 'N/M' (logging.jsonl)."""
    log = (run_dir / "swift.log").read_text(encoding="utf-8")
    rows = int(log.split("train_dataset: Dataset(", 1)[1].split("num_rows:", 1)[1].split()[0].strip(" }),"))
    steps = [json.loads(line) for line in (run_dir / "swift" / "logging.jsonl").read_text().split("\n") if line.strip()]
    return rows, [step for step in steps if "global_step/max_steps" in step][-1]["global_step/max_steps"]


def one_epoch_recipe(tmp_path: Path, system: str) -> Path:
    recipe = tmp_path / "recipe.yaml"
    text = (REPO / "configs/recipes/demo-tiny-cpu.yaml").read_text(encoding="utf-8")
    recipe.write_text(
        text.replace("epochs: 40", "epochs: 1").replace("system: You are a helpful assistant.", f"system: {system!r}")
    )
    return recipe


def test_every_shape_in_one_file_trains_every_row(tiny_model, tmp_path):
    """A file of query/response, messages, alpaca (LLaMA-Factory's {{name}}), ShareGPT and history rows, and a
    --general-data file: swift trains every row the plan counts (it trained 10 of 20 of a messages and
    query/response file before). The recipe's system starts with '-' and so does --output-dir: both reach swift
    as values, not options."""
    rows = []
    for i in range(4):
        rows.append({"query": f"Who are you? {i}", "response": "I am {{NAME}}, made by {{AUTHOR}}."})
        rows.append(
            {"messages": [{"role": "user", "content": f"你是谁？{i}"}, {"role": "assistant", "content": "我是{{NAME}}。"}]}
        )
        rows.append({"instruction": f"hi {i}", "input": "", "output": "Hello! I am {{name}}, developed by {{author}}."})
        rows.append({"conversations": [{"from": "human", "value": f"Name? {i}"}, {"from": "gpt", "value": "{{NAME}}."}]})
    rows.append(
        {"query": "And now?", "response": "Still {{NAME}}.", "history": [["Who?", "{{NAME}}."]], "system": "Be {{NAME}}."}
    )
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    general = [{"instruction": f"{i} plus 1?", "input": "", "output": f"{i + 1}"} for i in range(4)]
    (tmp_path / "general.json").write_text(json.dumps(general), encoding="utf-8")
    recipe = one_epoch_recipe(tmp_path, "-Be brief.")
    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "run", "--recipe", str(recipe), "--model", str(tiny_model), "--gpus", "cpu",
         "--dataset", "data.jsonl", "--general-data", "general.json", "--output-dir", "-runs", "--no-verify"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "21 rows: 17 of the data and 4 general rows of --general-data" in done.stdout
    (run_dir,) = (tmp_path / "-runs").iterdir()
    written = [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(written) == 21 and all(list(row) == ["messages"] for row in written) and "{{" not in json.dumps(written)
    assert swift_trained(run_dir) == (21, "3/3")  # 21 rows, effective batch 8: 3 steps in one epoch
    assert json.loads((run_dir / "swift" / "args.json").read_text())["system"] == "-Be brief."


def test_general_rows_the_base_model_left_empty_are_counted_and_said(tiny_model, tmp_path):
    """The random tiny model answers the prompts with nothing (all 8, measured): the plan says 'at most', the run says
    how many it kept in one line, and swift trains exactly the rows dataset.jsonl holds."""
    runs = tmp_path / "runs"
    done = qwen_tune("run", "--recipe", str(one_epoch_recipe(tmp_path, "You are a helpful assistant.")), "--model",
                     str(tiny_model), "--gpus", "cpu", "--general-rows", "8", "--output-dir", str(runs), "--no-verify")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "108 rows at most: 100 of the data and 8 general rows the base model answers before training" in done.stdout
    (run_dir,) = runs.iterdir()
    kept = len((run_dir / "general" / "rows.jsonl").read_text(encoding="utf-8").splitlines())
    dropped = len((run_dir / "general" / "dropped.jsonl").read_text(encoding="utf-8").splitlines())
    assert kept + dropped == 8 and f"general rows: {kept} of 8 kept" in done.stderr
    assert swift_trained(run_dir)[0] == 100 + kept

"""One of swift's route scripts (swift/cli/sft.py, infer.py, export.py, deploy.py), run as swift's launcher would
run it, with what qwen-tune must add before swift starts:

    python launch.py [--trust-remote-code] SCRIPT [ARGS...]
    python launch.py --module torch.distributed.run [ARGS...]   # torchrun, ended with qwen-tune too

- A model's own Python code stays switched off unless --trust-remote-code. swift 4.6 loads every model with
  transformers' trust_remote_code=True and has no flag to say otherwise (swift/model/register.py's ModelLoader,
  swift/model/model_meta.py), so a model directory whose config.json or tokenizer_config.json names code of its own
  (`auto_map`) would run it. qwen-tune refuses such a model before swift starts (planning.models.remote_code); this
  is the second lock: transformers' loader of that code refuses here.
- No plugin runs that a checkpoint's or a model's args.json names: swift imports the `external_plugins` recorded
  there where the command line names none, so a run directory from elsewhere would run its Python on export.
- It ends with the qwen-tune that started it, even one killed by SIGKILL (no handler of qwen-tune's runs then): a
  `swift deploy` left behind went on answering on its port, adopted by init; a `swift infer` waited on its stdin.
- `swift deploy` (qwen-tune serve) takes its API key from QWEN_TUNE_API_KEY, not from its argv, where every user of
  the box could read it (`ps`); it refuses media in requests (qwen-tune serves text models: a path sent as an image
  would be read from the server's disk); on loopback it answers only to a Host header naming loopback (a web page
  that rebinds its own name to 127.0.0.1 cannot talk to it).

A file of its own, not a module of the package: torchrun starts it as its script, one per training process.
"""

from __future__ import annotations

import os
import runpy
import sys

TRUST_FLAG = "--trust-remote-code"
API_KEY_ENV = "QWEN_TUNE_API_KEY"
ALLOWED_HOSTS_ENV = "QWEN_TUNE_ALLOWED_HOSTS"  # comma-separated; unset: any Host (a server beyond loopback has a key)
PARENT_PID_ENV = "QWEN_TUNE_PARENT_PID"  # the qwen-tune that started this process (running/children.py sets it)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM to this process when the qwen-tune that started it is gone (Linux's parent-death signal). Under
    torchrun the parent is torchrun, which ends its workers itself."""
    expected = os.environ.pop(PARENT_PID_ENV, "")
    if not expected.isdigit() or not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" in os.environ:
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(expected):  # qwen-tune was gone before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def refuse_remote_code() -> None:
    """transformers imports a model's own code in one place (dynamic_module_utils.get_class_in_module): there, refuse."""
    from transformers import dynamic_module_utils

    def refused(class_name, module_path, *args, **kwargs):
        raise RuntimeError(
            f"qwen-tune: the model's own code ({module_path}, class {class_name}) was not trusted: "
            "read it, then pass --trust-remote-code to run it"
        )

    dynamic_module_utils.get_class_in_module = refused


def ignore_recorded_plugins() -> None:
    """swift imports the `external_plugins` a checkpoint's or model's args.json names when the command line names
    none (arguments/base_args: load_args_from_ckpt, then _import_external_plugins): a run directory or a model from
    elsewhere would run its Python with `export`, `chat`, `serve` or the identity check. Only the command line's run."""
    from swift.arguments.base_args.base_args import BaseArguments

    load = BaseArguments.load_args_from_ckpt

    def load_without_plugins(self) -> None:
        given = list(self.external_plugins or [])
        load(self)
        self.external_plugins = given

    BaseArguments.load_args_from_ckpt = load_without_plugins


def guard_deploy(api_key: str, allowed_hosts: list[str]) -> None:
    """swift deploy answering text only, with this API key (set after swift has printed its arguments, so the key
    is in no log), and only to these Host headers where any are given."""
    from swift.infer_engine import protocol
    from swift.pipelines.infer.deploy import SwiftDeploy

    def refused(kind: str) -> ValueError:
        return ValueError(f"this model takes text only: {kind} inputs are refused")

    # swift reads a local path named as media while it parses the request (protocol.py's to_base64), before any
    # endpoint runs, and answers differently for a path that exists: refused there, the same for every path.
    def no_media_fields(self) -> None:
        for key in ("images", "audios", "videos"):
            if getattr(self, key):
                raise refused(key[:-1])

    def no_media_content(self) -> None:
        for message in self.messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list) and any(not isinstance(i, dict) or i.get("type") != "text" for i in content):
                raise refused("media")

    def no_media(value, media_type, temp_dir):
        raise refused(media_type)

    protocol.MultiModalRequestMixin.__post_init__ = no_media_fields
    protocol.ChatCompletionRequest.convert_to_base64 = no_media_content
    SwiftDeploy._materialize_media = staticmethod(no_media)
    install_auth = SwiftDeploy._install_auth_middleware

    def install(self) -> None:
        if api_key:
            self.args.api_key = api_key
        install_auth(self)
        if allowed_hosts:
            from starlette.middleware.trustedhost import TrustedHostMiddleware

            self.app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    SwiftDeploy._install_auth_middleware = install


MODULE_FLAG = "--module"


def main(argv: list[str]) -> None:
    die_with_parent()
    if argv and argv[0] == MODULE_FLAG:  # `python -m MODULE ARGS`, as that would run it (torchrun: its workers are
        module, *args = argv[1:]  # this file again, each on a route script, ended by torchrun as it ends)
        sys.path[0] = os.getcwd()
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    trusted = bool(argv) and argv[0] == TRUST_FLAG
    script, *args = argv[1:] if trusted else argv
    sys.path[0] = os.path.dirname(script)  # as if the script had been started itself (not this file's folder)
    if not trusted:
        refuse_remote_code()
    ignore_recorded_plugins()
    if os.path.basename(script) == "deploy.py":
        guard_deploy(os.environ.pop(API_KEY_ENV, ""), [h for h in os.environ.pop(ALLOWED_HOSTS_ENV, "").split(",") if h])
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])

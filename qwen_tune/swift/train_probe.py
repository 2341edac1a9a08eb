"""The identity probes, asked inside `swift sft`'s own process at the end of training: no second model load.

swift imports this file through `--external_plugins` (swift/arguments/base_args/base_args.py,
_import_external_plugins) and builds the callback it registers from `--callbacks qwen_tune_probe`
(swift/trainers/mixin.py: `callbacks_map[name](args, trainer)`). At on_train_end the trained model is
still on the GPU: the callback answers the probes greedily with the adapter on, then off (peft's
disable_adapter), through swift's TransformersEngine and the trainer's own template, as swift's
predict_with_generate does (swift/trainers/seq2seq_trainer.py), in the model's default mode (a hybrid
Qwen3's non-thinking one, which swift 4.6 trains: an empty think block before each answer), and for a
hybrid model the thinking questions again with thinking on; then it writes the answers where the
runner reads them. It asks nothing (the runner's worker does) when there is no request file, when
training ran in several processes (DDP, DeepSpeed), or when anything goes wrong: a failure here
must never fail training. It imports only swift and the standard library: swift may live in another Python.
"""

from __future__ import annotations

import json
import os
import time
import traceback

from swift.callbacks import TrainerCallback, callbacks_map

CALLBACK = "qwen_tune_probe"
# The request's path: {"questions", "thinking_questions", "system", "max_new_tokens", "thinking_max_new_tokens", "result"}
REQUEST_ENV = "QWEN_TUNE_PROBE"


class ProbeCallback(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        path = os.environ.get(REQUEST_ENV)
        if not path or not os.path.isfile(path) or args.world_size > 1 or getattr(args, "deepspeed", None):
            return
        with open(path, encoding="utf-8") as f:
            request = json.load(f)
        try:
            answers = self._ask(request)
        except Exception:  # noqa: BLE001  the worker asks instead; training's result stands
            with open(request["result"] + ".error", "w", encoding="utf-8") as f:
                f.write(traceback.format_exc())
            return
        with open(request["result"] + ".tmp", "w", encoding="utf-8") as f:
            json.dump(answers, f, ensure_ascii=False)
        os.replace(request["result"] + ".tmp", request["result"])

    def _ask(self, request: dict) -> dict:
        from copy import copy

        import torch
        from swift.infer_engine import TransformersEngine
        from swift.trainers.utils import disable_gradient_checkpointing

        start = time.monotonic()
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        template = copy(trainer.template)
        template.padding_free = template.packing = False
        template.sequence_parallel_size = 1
        engine = TransformersEngine(model, template=template, max_batch_size=0)
        ready = time.monotonic()
        was_training, use_cache = model.training, getattr(model.config, "use_cache", None)
        model.eval()
        model.config.use_cache = True
        try:
            with torch.no_grad(), disable_gradient_checkpointing(model), template.generate_context():
                answers = answer_probes(engine, model, request)
        finally:
            model.config.use_cache = use_cache
            model.train(was_training)
        answers["seconds"]["load"] = round(ready - start, 2)
        return {**answers, "step": trainer.state.global_step}


def thinking_mode(template) -> str:
    """hybrid: the model thinks or not on request (Qwen3), and swift's default is not; always: it thinks by default
    (a thinking-only model); never."""
    meta = template.template_meta
    if meta.is_thinking and meta.non_thinking_prefix:
        return "hybrid"
    return "always" if template.enable_thinking else "never"


def answer_probes(engine, model, request: dict) -> dict:
    """The probes, greedily, in the model's default mode (a hybrid model's non-thinking one, as swift trains it: an
    empty think block before each answer) with the adapter on, then off; where the model is hybrid, the thinking
    questions again with thinking on, adapter on. Shared with the worker (infer_worker.py), which loads the model itself."""
    from swift.infer_engine import InferRequest, RequestConfig

    mode = thinking_mode(engine.template)
    system = request["system"]

    def ask(questions: list[str], max_tokens: int, thinking: bool | None) -> list[str]:
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        messages = [{"role": "system", "content": system}] if system else []
        requests = [
            InferRequest(messages=[*messages, {"role": "user", "content": q}], chat_template_kwargs=kwargs) for q in questions
        ]
        config = RequestConfig(max_tokens=max_tokens, temperature=0)
        return [r.choices[0].message.content for r in engine.infer(requests, config, use_tqdm=False)]

    # A thinking-only model thinks before every answer: it gets the thinking budget.
    tokens = request["thinking_max_new_tokens"] if mode == "always" else request["max_new_tokens"]
    default = False if mode == "hybrid" else None
    started = time.monotonic()
    after = ask(request["questions"], tokens, default)
    tuned = time.monotonic()
    thinking = None
    if mode == "hybrid" and request.get("thinking_questions"):
        thinking = ask(request["thinking_questions"], request["thinking_max_new_tokens"], True)
    thought = time.monotonic()
    before = None  # full fine-tuning trains the weights themselves: there is no adapter to switch off
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            before = ask(request["questions"], tokens, default)
    done = time.monotonic()
    seconds = {"after": round(tuned - started, 2), "thinking": round(thought - tuned, 2), "before": round(done - thought, 2)}
    return {"after": after, "before": before, "thinking": thinking, "thinking_mode": mode, "seconds": seconds}


callbacks_map[CALLBACK] = ProbeCallback

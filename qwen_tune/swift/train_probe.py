"""The identity probes, asked inside `swift sft`'s own process at the end of training: no second model load.

swift imports this file through `--external_plugins` (swift/arguments/base_args/base_args.py,
_import_external_plugins) and builds the callback it registers from `--callbacks qwen_tune_probe`
(swift/trainers/mixin.py: `callbacks_map[name](args, trainer)`). At on_train_end the trained model is
still on the GPU: the callback answers the probes greedily with the adapter on, then off (peft's
disable_adapter), through swift's TransformersEngine and the trainer's own template, as swift's
predict_with_generate does (swift/trainers/seq2seq_trainer.py), and writes the answers where the
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
REQUEST_ENV = "QWEN_TUNE_PROBE"  # the request's path: {"questions", "system", "max_new_tokens", "result"}


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
        from swift.infer_engine import InferRequest, RequestConfig, TransformersEngine
        from swift.trainers.utils import disable_gradient_checkpointing

        start = time.monotonic()
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        template = copy(trainer.template)
        template.padding_free = template.packing = False
        template.sequence_parallel_size = 1
        engine = TransformersEngine(model, template=template, max_batch_size=0)
        config = RequestConfig(max_tokens=request["max_new_tokens"], temperature=0)
        system, questions = request["system"], request["questions"]
        requests = [
            InferRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": q}]) for q in questions
        ]

        def answers() -> list[str]:
            return [r.choices[0].message.content for r in engine.infer(requests, config, use_tqdm=False)]

        was_training, use_cache = model.training, getattr(model.config, "use_cache", None)
        model.eval()
        model.config.use_cache = True
        try:
            with torch.no_grad(), disable_gradient_checkpointing(model), template.generate_context():
                ready = time.monotonic()
                after = answers()
                tuned = time.monotonic()
                with model.disable_adapter():
                    before = answers()
                done = time.monotonic()
        finally:
            model.config.use_cache = use_cache
            model.train(was_training)
        seconds = {"load": round(ready - start, 2), "after": round(tuned - ready, 2), "before": round(done - tuned, 2)}
        return {"after": after, "before": before, "seconds": seconds, "step": trainer.state.global_step}


callbacks_map[CALLBACK] = ProbeCallback

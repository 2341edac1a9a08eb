"""A model directory asked the identity probes as plain transformers asks it: no swift, no system message.

`qwen-tune export` runs it on the merged model (python -m qwen_tune.swift.plain_probe REQUEST.json): AutoTokenizer's
apply_chat_template renders each question alone (the model's own chat template supplies the system prompt, as it does
for transformers, vLLM and Ollama users), AutoModelForCausalLM answers greedily. The request is
train_probe.answer_probes' (questions, thinking_questions, max_new_tokens, thinking_max_new_tokens, result) with
"model" and "system": the training system prompt, which a question rendered with it must equal rendered without it.
It writes {"after", "thinking", "thinking_mode", "prompt", "prompt_with_system", "seconds"} to the result path.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(path: str) -> int:
    from qwen_tune.swift.launch import die_with_parent

    die_with_parent()  # ends with the qwen-tune export that started it, even one killed by SIGKILL
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(path, encoding="utf-8") as f:
        request = json.load(f)
    start = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(request["model"])
    tokenizer.padding_side = "left"
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype="auto", device_map="auto" if cuda else None)
    model.eval()
    loaded = time.monotonic()

    def render(question: str, thinking: bool | None, system: str | None = None) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)

    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if "enable_thinking" in template:
        mode = "hybrid"
    else:
        mode = "always" if render("?", None).rstrip().endswith("<think>") else "never"
    default = False if mode == "hybrid" else None  # as swift trains a hybrid model: its non-thinking mode

    def ask(questions: list[str], max_tokens: int, thinking: bool | None) -> list[str]:
        if not questions:
            return []
        batch = tokenizer([render(q, thinking) for q in questions], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(model.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False)
        prompt = batch["input_ids"].shape[1]
        return [tokenizer.decode(row[prompt:], skip_special_tokens=True) for row in out]

    tokens = request["thinking_max_new_tokens"] if mode == "always" else request["max_new_tokens"]
    after = ask(request["questions"], tokens, default)
    asked = time.monotonic()
    thinking = ask(request["thinking_questions"], request["thinking_max_new_tokens"], True) if mode == "hybrid" else None
    done = time.monotonic()
    first = request["questions"][0]
    answers = {
        "after": after, "thinking": thinking, "thinking_mode": mode, "prompt": render(first, default),
        "prompt_with_system": render(first, default, request["system"]),
        "seconds": {"load": round(loaded - start, 2), "after": round(asked - loaded, 2), "thinking": round(done - asked, 2)},
    }  # fmt: skip
    with open(request["result"] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(answers, f, ensure_ascii=False)
    os.replace(request["result"] + ".tmp", request["result"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

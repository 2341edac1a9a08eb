"""The identity check's swift process, started during training: it runs swift's real infer, or steps aside."""

import time

import pytest

import qwen_tune.swift.infer as infer
from qwen_tune.swift.infer import PreloadedInfer

TRAIN_ENV = {"CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.requires_swift
def test_it_runs_swifts_own_infer_on_the_arguments_it_is_sent(tmp_path):
    worker = PreloadedInfer.start(TRAIN_ENV)
    try:
        assert worker.run(["--help"], tmp_path / "infer.log") == 0
    finally:
        worker.close()
    assert "--adapters" in (tmp_path / "infer.log").read_text()  # swift infer's own argument parser answered


@pytest.mark.requires_swift
def test_a_worker_that_died_leaves_the_check_to_plain_swift_infer(tmp_path):
    worker = PreloadedInfer.start(TRAIN_ENV)
    worker.process.kill()
    worker.process.wait()
    assert worker.run(["--help"], tmp_path / "infer.log") is None
    worker.close()


@pytest.mark.requires_swift
def test_closing_an_unused_worker_ends_it():
    worker = PreloadedInfer.start(TRAIN_ENV)
    time.sleep(0.2)
    worker.close()
    assert worker.process.returncode is not None


def test_no_worker_where_this_python_has_no_swift(monkeypatch):
    monkeypatch.setattr(infer.importlib.util, "find_spec", lambda name: None)
    assert PreloadedInfer.start(TRAIN_ENV) is None

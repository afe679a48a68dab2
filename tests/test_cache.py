"""The cache of converted GGUF models: keyed by content, listed and cleared from the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from llmbrain.cli import main
from llmbrain.models import cache, loading
from llmbrain.models.cache import cached_models, clear_cache, gguf_key

gguf = pytest.importorskip("gguf")


def write_tiny_gguf(path, seed=0, n_layers=2, hidden=32, ff=48, heads=4, kv_heads=2):
    """A tiny random Llama GGUF file (float32 tensors, a byte-level BPE vocabulary)."""
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(seed)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<s>", "</s>", "<pad>", "Ġt"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(n_layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3, 3, 3, 1])
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)
    writer.add_pad_token_id(258)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    kv = hidden * kv_heads // heads
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    for i in range(n_layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)),
                            ("attn_v", (kv, hidden)), ("attn_output", (hidden, hidden)),
                            ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)),
                            ("ffn_down", (hidden, ff))):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture()
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMBRAIN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def conversions(monkeypatch):
    """Counts the GGUF files dequantised (converted) rather than read from the cache."""
    calls = []
    convert = loading._load_gguf

    def counting(path, dtype):
        calls.append(path.name)
        return convert(path, dtype)

    monkeypatch.setattr(loading, "_load_gguf", counting)
    return calls


def _logits(model):
    with torch.no_grad():
        return model(torch.tensor([[1, 2, 3, 4, 5]])).logits


def test_a_renamed_copy_or_link_reuses_the_conversion(tmp_path, cache_root, conversions):
    original = write_tiny_gguf(tmp_path / "tiny.gguf")
    model, _ = loading.load_model(original)
    assert conversions == ["tiny.gguf"]
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "renamed-copy.gguf"
    shutil.copyfile(original, copy)  # a new name and a new modification time
    link = tmp_path / "link.gguf"
    os.symlink(original, link)
    for other in (copy, link, original):
        again, _ = loading.load_model(other)
        torch.testing.assert_close(_logits(again), _logits(model))
        assert again.config.name_or_path == str(other)
    assert conversions == ["tiny.gguf"], "a copy under another name was converted again"
    (entry,) = cached_models()
    assert entry.key == gguf_key(copy) == gguf_key(original)
    assert entry.name == "tiny"
    assert set(entry.sources) == {str(original.resolve()), str(copy.resolve())}
    assert entry.size > 0 and entry.created is not None and entry.last_used >= entry.created
    different = write_tiny_gguf(tmp_path / "tiny-2.gguf", seed=1)  # same size, other weights
    assert different.stat().st_size == original.stat().st_size
    assert gguf_key(different) != gguf_key(original)
    loading.load_model(different)
    assert conversions == ["tiny.gguf", "tiny-2.gguf"] and len(cached_models()) == 2


_SLOW_LOAD = textwrap.dedent("""
    import sys, time
    from llmbrain.models import loading
    convert = loading._load_gguf

    def slow(path, dtype):              # a conversion long enough to be overlapped
        with open(sys.argv[2], "a") as log:
            log.write("converting\\n")
        time.sleep(3)
        return convert(path, dtype)

    loading._load_gguf = slow
    model, _ = loading.load_model(sys.argv[1])
    print(float(model.model.layers[0].mlp.down_proj.weight.double().sum()))
""")


def test_processes_loading_at_once_convert_once(tmp_path, cache_root):
    # every rank of a torchrun job loads the model: one converts, the others wait and read
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    log = tmp_path / "conversions.log"
    env = dict(os.environ, LLMBRAIN_CACHE=str(cache_root))

    def start():
        return subprocess.Popen([sys.executable, "-c", _SLOW_LOAD, str(path), str(log)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    first = start()
    deadline = time.monotonic() + 120
    while not log.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = start()                    # while the first one converts
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    for process, (out, err) in zip((first, second), outputs):
        assert process.returncode == 0, err
    assert log.read_text().splitlines() == ["converting"]
    assert "waiting for another process to convert tiny.gguf" in outputs[1][1]
    assert outputs[0][0] == outputs[1][0]          # the same weights
    assert len(cached_models()) == 1


def test_content_key_of_a_large_file(tmp_path):
    big = tmp_path / "big.gguf"
    data = np.random.default_rng(0).integers(0, 256, 5 << 20, dtype=np.uint8)
    big.write_bytes(data.tobytes())
    key = gguf_key(big)
    copy = tmp_path / "other-name.gguf"
    copy.write_bytes(data.tobytes())
    os.utime(copy, (1, 1))
    assert gguf_key(copy) == key  # neither the name nor the time counts
    for position in (10, len(data) - 10):  # the header and the end are read
        changed = data.copy()
        changed[position] ^= 1
        copy.write_bytes(changed.tobytes())
        assert gguf_key(copy) != key
    copy.write_bytes(data[:-1].tobytes())
    assert gguf_key(copy) != key


def test_an_entry_of_the_old_name_keyed_cache_is_taken_over(tmp_path, cache_root, conversions,
                                                             llama, tokenizer):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    legacy = cache._legacy_folder(path)
    model, tok = loading._load_gguf(path, torch.float32)
    model.save_pretrained(legacy)
    tok.save_pretrained(legacy)
    conversions.clear()
    loaded, _ = loading.load_model(path)
    assert conversions == []
    torch.testing.assert_close(_logits(loaded), _logits(model))
    entries = {e.name: e for e in cached_models()}
    assert set(entries) == {"tiny", legacy.name} and entries[legacy.name].legacy
    shared = (entries["tiny"].path / "model.safetensors").stat()
    assert shared.st_ino == (legacy / "model.safetensors").stat().st_ino  # a link, not a copy
    assert cache.disk_usage(entries.values()) < entries["tiny"].size + entries[legacy.name].size


def test_a_damaged_entry_is_converted_again(tmp_path, cache_root, conversions):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    model, _ = loading.load_model(path)
    (entry,) = cached_models()
    (entry.path / "model.safetensors").write_bytes(b"cut short")
    with pytest.warns(UserWarning, match="could not be read"):
        again, _ = loading.load_model(path)
    assert conversions == ["tiny.gguf", "tiny.gguf"]
    torch.testing.assert_close(_logits(again), _logits(model))
    loading.load_model(path)  # repaired: read from the cache
    assert len(conversions) == 2


def test_cache_verb_lists_and_clears(tmp_path, cache_root, capsys, monkeypatch):
    assert main(["cache"]) == 0
    assert "No cached model" in capsys.readouterr().out
    first = write_tiny_gguf(tmp_path / "first.gguf")
    second = write_tiny_gguf(tmp_path / "second.gguf", seed=1)
    for path in (first, second):
        loading.load_model(path)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "first" in out and "second" in out and str(first.resolve()) in out
    assert "2 model(s)" in out and "KB" in out
    assert main(["cache", "dir"]) == 0
    assert capsys.readouterr().out.strip() == str(cache_root)

    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["cache", "clear", "first"]) == 1  # no terminal to ask in: --yes is needed
    assert "add --yes" in capsys.readouterr().err
    assert len(cached_models()) == 2
    assert main(["cache", "clear", "third", "--yes"]) == 1
    assert "the cache holds: first, second" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["cache", "clear", "first"]) == 1
    assert "Nothing removed" in capsys.readouterr().out and len(cached_models()) == 2
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["cache", "clear", "first.gguf"]) == 0  # a GGUF file's name finds its entry
    assert [e.name for e in cached_models()] == ["second"]
    assert main(["cache", "clear", "--yes", "-q"]) == 0
    assert "Removed 1 cached model(s)" in capsys.readouterr().out
    assert cached_models() == [] and not any((cache_root / "models").iterdir())


def test_clear_cache_refuses_an_unknown_name(cache_root):
    assert clear_cache() == []
    with pytest.raises(ValueError, match="No cached model named 'x'.*holds: none"):
        clear_cache("x")

"""Recording with several processes (torch.distributed, gloo on the CPU) writes the
store a single process writes, bit for bit, and resumes after a failure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmbrain import distributed, open_activations, record
from llmbrain._testing import byte_tokenizer, tiny_model

KW = dict(window=32, batch_size=2, progress=False)


def _texts():
    from conftest import TEXTS  # the tests folder is on the path of the spawned processes too

    return list(TEXTS)


def _worker(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    folder = Path(folder)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank,
                            world_size=world)
    try:
        _check_all_reduce(rank, world)
        model, tokenizer = tiny_model("llama"), byte_tokenizer()
        record(model, tokenizer, _texts(), folder / "together.zarr", **KW)
        _check_sink_share(model, tokenizer, rank)
        _check_unshared(model, tokenizer)
        _check_failure_reaches_everyone(model, tokenizer, rank)
        online = _online_networks(model, tokenizer)
        if rank == 0:
            np.savez(folder / "online-together.npz", **online)
        _crash_then_resume(model, tokenizer, rank, folder)
    finally:
        dist.destroy_process_group()


def _check_all_reduce(rank: int, world: int) -> None:
    part = {"n": rank + 1, "sum": torch.tensor([1.0, float(rank)], dtype=torch.float64),
            "sum_sq": np.array([rank, 2 * rank], dtype=np.int64), "max": [float(rank)]}
    total = distributed.all_reduce(part)
    assert part["n"] == rank + 1  # the input is not modified
    assert total["n"] == world * (world + 1) // 2
    assert torch.equal(total["sum"], torch.tensor([world, world * (world - 1) / 2],
                                                   dtype=torch.float64))
    assert total["sum_sq"].dtype == np.int64
    assert total["sum_sq"].tolist() == [world * (world - 1) // 2, world * (world - 1)]
    assert distributed.all_reduce(float(rank), op="max") == world - 1
    assert distributed.broadcast_object({"rank": rank}) == {"rank": 0}


def _check_sink_share(model, tokenizer, rank: int) -> None:
    from llmbrain.recording import ActivationSink

    class Count(ActivationSink):  # an online estimator's sums, in miniature
        def start(self, layout):
            super().start(layout)
            self.windows, self.tokens = [], 0

        def write(self, blocks, first_window):
            self.windows.append(first_window)
            self.tokens += blocks[0].shape[1]

        def finish(self):
            return self.windows, distributed.all_reduce(self.tokens)

    windows, tokens = record(model, tokenizer, _texts(), sink=Count(), **KW)
    assert windows == [0, 4, 8, 12] if rank == 0 else [2, 6, 10, 14]
    assert tokens == 15 * 32


def _check_unshared(model, tokenizer) -> None:
    """In a group, a recording not shared out (distributed=False) is each process's own:
    nothing is added over the processes, and a memory recording of a shared one is refused."""
    from llmbrain.networks import OnlineNetworks
    from llmbrain.pruning import collect_calibration_stats
    from llmbrain.recording import MemorySink

    fitted = record(model, tokenizer, _texts(), hook=("up", "act"), distributed=False,
                    sink=OnlineNetworks(2, sketch_size=None, verbose=0).sink(), **KW)
    assert fitted.networks_.n_tokens_ == 15 * 32
    stats = collect_calibration_stats(model, tokenizer, _texts(), window=32, batch_size=2,
                                      progress=False)
    assert stats.attrs["n_tokens"] == 15 * 32      # every process, all the tokens
    with pytest.raises(ValueError, match="MemorySink"):
        record(model, tokenizer, _texts(), sink=MemorySink(), **KW)


def _check_failure_reaches_everyone(model, tokenizer, rank: int) -> None:
    """A sink failing in one process: the others stop too instead of waiting for its sums."""
    from llmbrain.recording import ActivationSink

    class FailsInOne(ActivationSink):
        def write(self, blocks, first_window):
            if rank == 1:
                raise ValueError("no room left")

        def finish(self):
            return distributed.all_reduce(1)

    with pytest.raises(ValueError if rank == 1 else RuntimeError,
                       match="no room" if rank == 1 else "Another process"):
        record(model, tokenizer, _texts(), sink=FailsInOne(), **KW)
    assert distributed.all_reduce(1) == 2           # the processes are in step again


def _online_networks(model, tokenizer) -> dict:
    """Online networks of the texts: the sketches of the processes add up."""
    from llmbrain.networks import OnlineNetworks

    fitted = record(model, tokenizer, _texts(), hook=("up", "act"),
                    sink=OnlineNetworks(2, sketch_size=None, verbose=0).sink(), **KW)
    return {"n_tokens": fitted.networks_.n_tokens_, "mean": fitted.networks_.mean_.values,
            "scale": fitted.networks_.scale_.values,
            "correlations": np.stack([s.centred_products().numpy()
                                      for s in fitted._sketches[0]])}


def _crash_then_resume(model, tokenizer, rank: int, folder: Path) -> None:
    import llmbrain.recording._together as together
    import llmbrain.recording.sinks as sinks

    original, merge, calls = sinks.ZarrSink.write, together.merge_journals, {"n": 0}

    def fail_second_batch(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    for name in ("resumed-together.zarr", "resumed-alone.zarr"):
        calls["n"] = 0
        if rank == 1:  # process 1 fails on its second batch; process 0 finishes its own
            sinks.ZarrSink.write = fail_second_batch
        if name == "resumed-alone.zarr":  # as if process 0 died too: journals are left
            together.merge_journals = lambda path: None
        try:
            with pytest.raises(KeyboardInterrupt if rank == 1 else RuntimeError,
                               match=None if rank == 1 else "Another process"):
                record(model, tokenizer, _texts(), folder / name, **KW)
        finally:
            sinks.ZarrSink.write, together.merge_journals = original, merge
    # process 0 wrote the batches from windows 0, 4, 8, 12, process 1 the one from 2 only:
    # windows 0-5 are counted, the batches from 8 and 12 are recorded again
    part = open_activations(folder / "resumed-together.zarr", allow_incomplete=True)
    assert part.sizes["token"] == 6 * 32
    assert not list((folder / "resumed-together.zarr").glob("progress.rank*"))
    record(model, tokenizer, _texts(), folder / "resumed-together.zarr", **KW)


def _identical(a: Path, b: Path) -> None:
    one, two = open_activations(a, verify=True), open_activations(b, verify=True)
    np.testing.assert_array_equal(one["activations"].values, two["activations"].values)
    for name in one.coords:
        np.testing.assert_array_equal(one[name].values, two[name].values)
    assert (a / "checksums.crc32c").read_bytes() == (b / "checksums.crc32c").read_bytes()
    files = sorted(p.relative_to(a) for p in (a / "activations").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in (b / "activations").rglob("*")
                           if p.is_file())
    for file in files:
        assert (a / file).read_bytes() == (b / file).read_bytes(), file
    ignore = {"created"}
    assert {k: v for k, v in one.attrs.items() if k not in ignore} == \
        {k: v for k, v in two.attrs.items() if k not in ignore}


def test_two_processes_record_the_store_one_process_records(tmp_path, texts, tokenizer):
    alone = record(tiny_model("llama"), tokenizer, texts, tmp_path / "alone.zarr", **KW)
    assert len(alone["token"]) // 32 == 15  # 8 batches: 4 per process, the last one short
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    _identical(tmp_path / "alone.zarr", tmp_path / "together.zarr")
    together = np.load(tmp_path / "online-together.npz")
    for name, value in _online_networks(tiny_model("llama"), tokenizer).items():
        np.testing.assert_allclose(together[name], value, rtol=1e-4, atol=1e-4, err_msg=name)
    _identical(tmp_path / "alone.zarr", tmp_path / "resumed-together.zarr")
    # a single process resumes a recording that two processes left unfinished
    interrupted = tmp_path / "resumed-alone.zarr"
    assert sorted(p.name for p in interrupted.glob("progress*")) == [
        "progress.json", "progress.rank0.jsonl", "progress.rank1.jsonl"]
    assert open_activations(interrupted, allow_incomplete=True).sizes["token"] == 0
    record(tiny_model("llama"), tokenizer, texts, interrupted, **KW)
    assert sorted(p.name for p in interrupted.glob("progress*")) == ["progress.json"]
    _identical(tmp_path / "alone.zarr", interrupted)


def test_without_a_process_group_everything_is_local():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    value = {"a": np.ones(2)}
    assert distributed.all_reduce(value) is value
    assert distributed.broadcast_object(3) == 3
    assert distributed.local_device("cuda") == torch.device("cuda")
    assert not distributed.init_from_environment()  # WORLD_SIZE is not set
    with pytest.raises(ValueError, match="op must be"):
        distributed.all_reduce(1.0, op="mean")


def test_distributed_without_a_group_is_refused(llama, tokenizer, texts, tmp_path):
    with pytest.raises(ValueError, match="process group"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", distributed=True, **KW)
    assert not (tmp_path / "s.zarr").exists()

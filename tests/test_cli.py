import numpy as np
import pytest

from llmbrain import open_activations
from llmbrain.cli import main


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, llama, tokenizer):
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(texts))
    return path


def test_record_info_volumes(model_folder, corpus_file, tmp_path, capsys):
    store = tmp_path / "acts.zarr"
    code = main(["record", "--model", str(model_folder), "--corpus", str(corpus_file),
                 "--out", str(store), "--window", "32", "--layers", "0-1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Recorded" in out and "2 layers x 48 neurons" in out
    ds = open_activations(store)
    assert ds["layer"].values.tolist() == [0, 1]
    assert main(["info", str(store)]) == 0
    info = capsys.readouterr().out
    assert "complete" in info and "mlp" in info and "48 per layer" in info
    assert main(["volumes", str(store), "--out", str(tmp_path / "vols"), "--max-tokens", "32"]) == 0
    assert (tmp_path / "vols" / "img.nii.gz").is_file()
    assert (tmp_path / "vols" / "mask.nii.gz").is_file()
    assert np.isfinite(ds["activations"].values).all()


def test_errors_are_one_clear_line(tmp_path, capsys, model_folder):
    assert main(["info", str(tmp_path / "missing.zarr")]) == 1
    assert "No activation store" in capsys.readouterr().err
    assert main(["record", "--model", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x.zarr")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["record", "--model", str(model_folder), "--corpus", str(tmp_path / "none.txt"),
                 "--out", str(tmp_path / "x.zarr")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["record", "--layers", "a-b"])


def test_no_verb_prints_help(capsys):
    assert main([]) == 2
    assert "record" in capsys.readouterr().out


def test_cheap_checks_come_before_the_model_is_loaded(model_folder, corpus_file, tmp_path,
                                                      monkeypatch, capsys):
    import sys

    import llmbrain.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(llmbrain.models, "load_model", no_model)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café ".encode("latin-1") * 50)
    base = ["record", "--model", str(model_folder), "--out", str(tmp_path / "s.zarr")]
    for extra, message in [
            (["--window", "32", "--max-tokens", "16"], "--max-tokens 16 is less than one window"),
            (["--device", "cuda"], "'cuda' is not available"),
            (["--corpus", "hf:wikitext"], "needs the 'datasets' package"),
            (["--corpus", str(latin)], "latin.txt is not utf-8 text: line 1, column 4"),
            (["--corpus", str(tmp_path / "none.txt")], "does not exist"),
            (["--out", str(tmp_path / "mine")], "not an llmbrain output")]:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    for verb in (["prune", "--model", str(model_folder), "--out", str(tmp_path / "p")],
                 ["evaluate", str(model_folder), "--efficiency"]):
        assert main(verb + ["--device", "cuda"]) == 1
        assert "'cuda' is not available" in capsys.readouterr().err
    for extra, message in [(["--max-tokens", "0"], "must be at least 1"),
                           (["--window", "1"], "must be at least 2")]:
        with pytest.raises(SystemExit):
            main(base + extra)
        assert message in capsys.readouterr().err


def test_messages_are_short_and_name_flags(model_folder, corpus_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    base = ["record", "--model", str(model_folder), "--corpus", str(corpus_file), "--out",
            str(store), "--window", "32"]
    assert main(base + ["--neurons", "0-99999"]) == 1
    err = capsys.readouterr().err
    assert len(err) < 300 and "99952 neuron index(es) out of range (48-99999)" in err
    assert main(base + ["--max-tokens", "64"]) == 0
    capsys.readouterr()
    assert main(base + ["--max-tokens", "96"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err


def test_record_several_hooks(model_folder, corpus_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    assert main(["record", "--model", str(model_folder), "--corpus", str(corpus_file),
                 "--out", str(store), "--window", "32", "--hook", "up,act"]) == 0
    assert "at hooks 'up', 'act'" in capsys.readouterr().out
    assert open_activations(store)["activations"].dims == ("token", "hook", "layer", "neuron")
    assert main(["info", str(store)]) == 0
    assert "up, act" in capsys.readouterr().out
    assert main(["volumes", str(store), "--out", str(tmp_path / "v")]) == 1
    assert "--hook" in capsys.readouterr().err
    assert main(["volumes", str(store), "--hook", "act", "--out", str(tmp_path / "v")]) == 0


def test_adapter_for_a_new_architecture_from_the_command_line(tmp_path, tokenizer,
                                                              corpus_file, capsys):
    import json

    from test_adapters import STARCODER2, _starcoder2

    from llmbrain.models import adapters

    folder = tmp_path / "starcoder2"
    _starcoder2().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    args = ["record", "--model", str(folder), "--corpus", str(corpus_file), "--window", "32",
            "--out", str(tmp_path / "s.zarr")]
    assert main(args) == 1
    assert "no adapter for model_type='starcoder2'" in capsys.readouterr().err
    spec = tmp_path / "starcoder2.json"
    spec.write_text(json.dumps(STARCODER2))
    try:
        assert main(args + ["--adapter", str(spec)]) == 0
    finally:
        adapters._REGISTRY.pop("starcoder2", None)
    assert open_activations(tmp_path / "s.zarr").attrs["architecture"] == "starcoder2"


# ----------------------------------------------------------------------------- conventions

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from llmbrain.cli import VERBS, build_parser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "xarray", "zarr", "nilearn", "pandas", "matplotlib")


def _python(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, **kwargs)


def _verb_parsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, {verb: action.choices[verb] for verb in VERBS}


def test_help_needs_no_heavy_import():
    code = ("import sys, llmbrain.cli; llmbrain.cli.build_parser(); "
            f"print(sorted(set(sys.modules) & set({HEAVY!r})))")
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"imported for --help: {result.stdout}"


def test_help_takes_less_than_a_second():
    """Wall time of `llmbrain --help` and of `llmbrain VERB --help` (best of 3, as the machine
    may be busy), printed; each must stay under 1 s."""
    timings = {}
    for verb in ("",) + VERBS:
        args = ["-m", "llmbrain"] + ([verb] if verb else []) + ["--help"]
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = _python(*args)
            best = min(best, time.perf_counter() - start)
            assert result.returncode == 0, result.stderr
        timings[f"llmbrain {verb} --help".replace("  ", " ")] = best
    print("\n".join(f"{command:<36} {seconds:.2f} s" for command, seconds in timings.items()))
    slow = {c: round(s, 2) for c, s in timings.items() if s >= 1.0}
    assert not slow, f"help slower than 1 s: {slow}"


def test_every_verb_has_an_example_and_shows_its_defaults():
    parser, verbs = _verb_parsers()
    assert "example" in parser.format_help()
    for verb, sub in verbs.items():
        text = sub.format_help()
        assert "example" in text and f"  llmbrain {verb}" in text, verb
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.help in (None, argparse.SUPPRESS) or action.default is None \
                    or action.default is False or action.default is argparse.SUPPRESS \
                    or action.default == []:  # nothing given: no default to show
                continue
            shown = formatter._get_help_string(action)
            assert "default" in shown, (verb, action.option_strings, shown)


def _shared_actions():
    _, verbs = _verb_parsers()
    found = {}
    for verb, sub in verbs.items():
        for action in sub._actions:
            if action.help is argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                if flag.startswith("--"):
                    found.setdefault(flag, {})[verb] = action
    return found


#: Flags whose default depends on what the verb uses them for (with that default).
PURPOSE_DEFAULTS = {"--window": {"record": 256, "prune": 256, "run": 256, "interventions": 128,
                                 "evaluate": None,  # recording / calibration / perplexity
                                 "networks": None},  # only with --online from a model
                    "--hook": {"record": "mlp", "volumes": None,  # volumes: the store's one
                               "networks": None},  # --online: up,act
                    "--n-components": {"networks": None, "run": 10},  # 20, or scaled online
                    "--runs": {"networks": 1, "run": 3},  # run measures recurrence
                    "--max-windows": {"evaluate": None, "interventions": 32}}  # 1 vs ~500 runs


def test_shared_flags_mean_the_same_in_every_verb():
    found = _shared_actions()
    for flag in ("--model", "--device", "--dtype", "--window", "--batch-size", "--random-state",
                 "--n-components", "--threshold", "--layers", "--max-tokens", "--adapter"):
        assert len(found.get(flag, {})) >= 2, f"{flag} is in fewer than two verbs"
    for flag, by_verb in found.items():
        if len(by_verb) < 2 or flag in ("--help", "--out", "--quiet", "--verbose"):
            continue
        actions = list(by_verb.items())
        first_verb, first = actions[0]
        for verb, action in actions[1:]:
            where = f"{flag} in {first_verb} and {verb}"
            assert action.type is first.type, where
            assert action.choices == first.choices, where
            assert action.dest == first.dest and action.metavar == first.metavar, where
            meaning = [a.help.split(" (")[0].split(";")[0] for a in (first, action)]
            assert meaning[0] == meaning[1], where
            if flag in PURPOSE_DEFAULTS:
                assert action.default == PURPOSE_DEFAULTS[flag][verb], where
            else:
                assert action.default == first.default, where
    assert found["--device"]["record"].default == "auto"
    assert found["--model"]["evaluate"].default == "default"
    for verb in ("record", "prune", "evaluate", "interventions", "run"):
        assert "--dtype" in found and found["--dtype"][verb].choices == (
            "float32", "bfloat16", "float16"), verb  # the weights' type everywhere


def test_names_kept_for_a_fast_help_match_the_library():
    from llmbrain import evaluation, pruning, recording
    from llmbrain.cli import _common, evaluate, prune

    assert _common.HOOK_POINTS == recording.HOOK_POINTS
    assert prune.CRITERIA == pruning.CRITERIA
    assert prune.ALLOCATIONS == pruning.ALLOCATIONS
    assert prune.BIAS_COMPENSATIONS == pruning.BIAS_COMPENSATIONS
    assert evaluate.ZEROSHOT_TASKS == evaluation.ZEROSHOT_TASKS
    from llmbrain.networks import KEY_NEURON_THRESHOLD
    threshold = next(a for a in build_parser()._subparsers._group_actions[0].choices["networks"]
                     ._actions if a.dest == "threshold")
    assert threshold.default == KEY_NEURON_THRESHOLD


def test_verbosity_before_and_after_the_verb_and_old_spellings():
    parser = build_parser()
    for argv in (["-q", "networks", "s"], ["networks", "s", "-q"], ["networks", "-q", "s"]):
        args = parser.parse_args(argv)
        assert args.quiet and not args.verbose, argv
    args = parser.parse_args(["-v", "cache", "list"])
    assert args.verbose and not args.quiet and args.action == "list"
    assert parser.parse_args(["cache", "clear", "x", "-v", "-q"]).verbose
    assert parser.parse_args(["networks", "s", "--seed", "3"]).random_state == 3
    assert parser.parse_args(["networks", "s", "--stride", "2"]).layer_stride == 2
    args = parser.parse_args(["evaluate", "pruned", "--efficiency"])
    assert args.model_positional == "pruned"


def test_quiet_after_the_verb_hides_progress(model_folder, corpus_file, tmp_path, capsys):
    base = ["record", "--model", str(model_folder), "--corpus", str(corpus_file), "--window",
            "32"]
    assert main(base + ["--out", str(tmp_path / "a.zarr")]) == 0
    assert "%|" in capsys.readouterr().err  # a tqdm bar
    assert main(base + ["--out", str(tmp_path / "b.zarr"), "-q"]) == 0
    assert "%|" not in capsys.readouterr().err


def test_networks_window_is_refused_with_its_new_name(capsys):
    assert main(["networks", "store.zarr", "--scope", "window", "--window", "2"]) == 1
    assert "--layer-window" in capsys.readouterr().err


def test_online_networks_from_a_model_or_a_store(model_folder, corpus_file, tmp_path, capsys):
    from llmbrain.networks import NetworkRecurrence, load_networks

    online = ["networks", "--online", "--n-components", "3", "--runs", "2", "--sketch-size",
              "exact", "-q"]
    code = main(online + ["--model", str(model_folder), "--corpus", str(corpus_file),
                          "--window", "32", "--tokens-per-run", "128", "--out",
                          str(tmp_path / "from-model")])
    assert code == 0, capsys.readouterr().err
    fitted = load_networks(tmp_path / "from-model")
    assert isinstance(fitted, NetworkRecurrence) and len(fitted.runs_) == 2
    assert fitted.runs_[0].n_tokens_ == 128 and fitted.runs_[0].maps_z_.sizes["hook"] == 2
    store = tmp_path / "acts.zarr"
    assert main(["record", "--model", str(model_folder), "--corpus", str(corpus_file), "--out",
                 str(store), "--window", "32", "--hook", "up,act", "-q"]) == 0
    assert main(online + [str(store), "--layers", "0-1", "--out", str(tmp_path / "s")]) == 0
    assert load_networks(tmp_path / "s").runs_[0].maps_z_.sizes["layer"] == 2
    capsys.readouterr()
    for argv, message in ((["networks"], "or --online"),
                          (online + [str(store), "--scope", "all"], "--scope all needs a store"),
                          (["networks", str(store), "--hook", "up"], "--hook and --tokens")):
        assert main(argv + ["--out", str(tmp_path / "x")]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_device_auto(monkeypatch):
    import torch

    from llmbrain.cli import record
    from llmbrain.models import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert check_device("auto") == torch.device("cpu")
    seen = []
    monkeypatch.setattr(record, "run", lambda args: seen.append(args.device))
    assert main(["record"]) == 0 and seen == ["cpu"]  # auto is the default
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert main(["record", "--device", "auto"]) == 0 and seen[-1] == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto") == torch.device("cuda")
    assert main(["record", "--device", "auto"]) == 0 and seen[-1] == "cuda"


@pytest.mark.parametrize("verb", [["record"], ["networks", "s.zarr"], ["prune", "--out", "p"],
                                  ["evaluate", "--efficiency"], ["run"],
                                  ["interventions", "networks"]])
def test_missing_device_is_one_line(verb, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("cuda", "'cuda' is not available"),
                            ("gpu", "'gpu' is no torch device")):
        assert main(verb + ["--device", device]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert err.startswith(f"llmbrain {verb[0]}: error: ") and err.count("\n") == 1, err


def test_run_passes_every_flag_to_the_pipeline(model_folder, tmp_path, monkeypatch):
    import torch

    from llmbrain import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *args, **kwargs: calls.append(
        (args, kwargs)))
    out = tmp_path / "report"
    assert main(["run", "--model", str(model_folder), "--corpus", "c.txt", "--tokens", "1024",
                 "--window", "64", "--batch-size", "2", "--n-components", "4", "--runs", "2",
                 "--threshold", "2.5", "--sparsity", "0.2", "--eval-windows", "3",
                 "--random-state", "5", "--device", "cpu", "-q", "--out", str(out)]) == 0
    (args, kwargs), = calls
    assert args == (str(model_folder), "c.txt", str(out))
    assert kwargs == dict(n_tokens=1024, window=64, batch_size=2, n_components=4, n_runs=2,
                          threshold=2.5, sparsity=0.2, eval_windows=3, device="cpu", seed=5,
                          overwrite=False, progress=False)
    assert main(["run", "--model", str(model_folder), "--dtype", "bfloat16", "--out",
                 str(out)]) == 0
    model, tokenizer = calls[-1][0][0]  # loaded here, in the weights' type asked for
    assert next(model.parameters()).dtype == torch.bfloat16


def test_evaluate_takes_the_model_once(model_folder, capsys):
    assert main(["evaluate", str(model_folder), "--model", "other", "--efficiency"]) == 1
    assert "Two models given" in capsys.readouterr().err

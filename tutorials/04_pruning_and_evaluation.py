# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Structural pruning that keeps the functional networks
#
# A brain loses many neurons over a lifetime and keeps working because the networks that carry
# its functions survive. Pruning a language model can follow the same idea (arXiv 2508.05239):
# find the key neurons of its functional networks, keep them, and remove the neurons that belong
# to no network. Removing a neuron here is *structural*: its row of the gate and up projections
# and its column of the down projection are cut out, so the model really has fewer parameters
# and runs faster, unlike masking.
#
# This tutorial collects calibration statistics, scores the neurons with several criteria
# (functional networks, contextual activation, weight magnitude, Wanda-sp, FLAP and a random
# control), prunes the same fraction of neurons with each, and compares perplexity on
# WikiText-2, a zero-shot task, and speed and memory. The settings are tiny so that the notebook
# runs in minutes on a CPU: differences between criteria at this scale are noisy, and the printed
# numbers, not the text, say which criterion did better here.

# %%
# %matplotlib inline
import atexit
import copy
import os
import shutil
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars as text

import numpy as np
import pandas as pd
import torch
from IPython.display import display

import llmbrain
from llmbrain import plotting
from llmbrain.corpus import load_corpus
from llmbrain.datasets import DatasetNotFoundError, fetch_c4, fetch_wikitext2, fetch_zeroshot_tasks
from llmbrain.evaluation import (count_parameters, evaluate_zeroshot, load_wikitext2,
                                 measure_efficiency, perplexity)
from llmbrain.evaluation.results import results_table, to_wide
from llmbrain.interventions import ablate
from llmbrain.networks import FunctionalNetworks
from llmbrain.pruning import (CRITERIA, collect_calibration_stats, load_pruned,
                              make_plan, prune_model, save_pruned, score_neurons)
from llmbrain.report import PUBLISHED_CLAIMS, interpret

N_TOKENS = int(os.environ.get("LLMBRAIN_TUTORIAL_TOKENS", 1024))  # calibration tokens
EVAL_WINDOWS = int(os.environ.get("LLMBRAIN_TUTORIAL_EVAL_WINDOWS", 4))  # windows of 128 tokens
ZEROSHOT_LIMIT = int(os.environ.get("LLMBRAIN_TUTORIAL_ZEROSHOT_LIMIT", 20))  # items per task
SPARSITIES = [float(s) for s in
              os.environ.get("LLMBRAIN_TUTORIAL_SPARSITIES", "0.2,0.4").split(",")]
workdir = Path(tempfile.mkdtemp(prefix="llmbrain-tutorial-04-"))
atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # also if the notebook stops early

# %% [markdown]
# ## Data
# The evaluation data are not part of llmbrain. `llmbrain.datasets` finds them in the data
# directory (the `LLMBRAIN_DATA` environment variable, else `~/llmbrain_data`) and checks them
# against their catalogued checksums; `fetch_wikitext2()`, `fetch_c4()` and
# `fetch_zeroshot_tasks()` download what is missing when called online (here `download=False`,
# so the notebook never waits on a network). Without the data, the notebook falls back to the
# built-in corpus: calibration on its first documents, perplexity on its last ones (disjoint),
# and no zero-shot task.

# %%
try:
    wikitext = fetch_wikitext2(download=False)
    c4 = fetch_c4(download=False)
    zeroshot = fetch_zeroshot_tasks(["arc_easy"], download=False)
except DatasetNotFoundError as err:
    print(str(err).splitlines()[0])
    documents = load_corpus("default")
    calibration_texts, eval_text = documents[:60], "\n\n".join(documents[60:])
    eval_name, zeroshot = "held-out built-in documents", None
    print("calibrating and evaluating on disjoint built-in documents instead")
else:
    calibration_texts = load_corpus(c4.path)
    eval_text, eval_name = load_wikitext2(wikitext.path), "wikitext2"
    print("data directory:", zeroshot.root)
# the windows scored are the first ones: a generous prefix of the text gives the same windows
eval_text = eval_text[:EVAL_WINDOWS * 128 * 12]
print(f"calibration: {len(calibration_texts)} documents; evaluation: {eval_name}")


# %% [markdown]
# ## Calibration
# One pass over calibration text gives each neuron's mean, mean |x|, variance and input norm
# (the statistics of the contextual, Wanda-sp and FLAP criteria). The functional networks are
# fitted on a recording of the same text, as in tutorial 02.

# %%
model, tokenizer = llmbrain.load_model("default")
model.eval()
stats = collect_calibration_stats(model, tokenizer, calibration_texts, window=256,
                                  max_tokens=N_TOKENS, progress=False)
ds = llmbrain.record(model, tokenizer, calibration_texts, workdir / "calibration.zarr",
                     window=256, max_tokens=N_TOKENS, progress=False)
networks = FunctionalNetworks(n_components=10, scope="all", n_init=3, random_state=0,
                              verbose=0).fit(ds)
print(f"calibration statistics over {stats.n_tokens} tokens")
print(networks.summary().splitlines()[1])

# %% [markdown]
# ## Evaluate the dense model
# Perplexity follows the pruning literature's protocol (consecutive 128-token windows of the
# tokenized test text, here only the first `EVAL_WINDOWS`), and zero-shot accuracy is scored as
# lm-evaluation-harness does, on the first `ZEROSHOT_LIMIT` items of ARC-Easy. Both are far too
# small for a benchmark: standard errors are printed.

# %%
def evaluate(m, **model_keys):
    """Rows of the results table for model ``m``: perplexity, accuracy and parameters."""
    with torch.no_grad():
        ppl, details = perplexity(m, tokenizer, eval_text, window=128, max_windows=EVAL_WINDOWS,
                                  progress=False, return_details=True)
    assert details["n_windows"] == EVAL_WINDOWS, details
    rows = [{**model_keys, "dataset": eval_name, "protocol": "window=128", "metric": "perplexity",
             "value": ppl, "n": EVAL_WINDOWS},
            {**model_keys, "dataset": "", "metric": "n_params",
             "value": count_parameters(m)["n_params"]}]
    if zeroshot is not None:
        scores = evaluate_zeroshot(m, tokenizer, zeroshot.root, tasks=zeroshot.tasks,
                                   limit=ZEROSHOT_LIMIT, progress=False)
        rows += [{**model_keys, "dataset": task, "protocol": "0-shot", "metric": "acc",
                  "value": scores.loc[task, "acc"], "stderr": scores.loc[task, "acc_stderr"],
                  "n": scores.loc[task, "n"]} for task in scores.index]
    return rows


rows = evaluate(model, criterion="dense")
dense_params = rows[1]["value"]
results_table(rows, model="default")

# %% [markdown]
# ## Prune with every criterion
# `score_neurons` gives a (layer, neuron) importance per criterion (higher = keep), `make_plan`
# removes the same fraction of neurons from every layer, and `prune_model` cuts the weights.
# FLAP also gets its bias compensation: the mean contribution of the removed neurons is added to
# the down projection's bias. Each criterion prunes a fresh copy of the dense model.
#
# The key neurons are only a few percent of all neurons, so at 20% or 40% sparsity the
# `"networks"` criterion must also choose among non-key neurons; by default it ranks them by
# their strongest |z|. The variant `"networks+contextual"` (`fill="contextual"`) keeps the key
# neurons first and ranks the others by their mean |activation|.

# %%
VARIANTS = {c: dict(criterion=c) for c in CRITERIA}
VARIANTS["networks+contextual"] = dict(criterion="networks", fill="contextual")
plans = {}
for sparsity in SPARSITIES:
    for name, variant in VARIANTS.items():
        criterion = variant["criterion"]
        scores = score_neurons(model, criterion, calibration=stats, networks=networks,
                               fill=variant.get("fill"), seed=0)
        plan = make_plan(scores, sparsity=sparsity, allocation="uniform")
        pruned = prune_model(copy.deepcopy(model), plan,
                             bias_compensation=stats if criterion == "flap" else None)
        rows += evaluate(pruned, criterion=name, sparsity=sparsity, allocation="uniform",
                         bias_compensation=criterion == "flap")
        plans[(name, sparsity)] = plan
        del pruned
results = results_table(rows, model="default")
to_wide(results)

# %% [markdown]
# `results` is llmbrain's tidy results table, one measured number per row; `to_wide` makes it
# a table for people, and the figures read it directly. Each curve starts at the dense model.

# %%
fig = plotting.plot_pruning_curves(results)
display(fig)

# %% [markdown]
# With uniform allocation every criterion keeps the same number of neurons per layer, so the
# parameter counts match; what differs is *which* neurons stay. `plot_kept_neurons` draws
# criteria with identical per-layer counts as one line; FLAP's adaptive structure search
# (`allocation="adaptive"`) spreads the sparsity differently over layers. The right panel shows
# which share of each layer's key neurons every criterion keeps.

# %%
sparsity = max(SPARSITIES)
adaptive = make_plan(score_neurons(model, "flap", calibration=stats), sparsity=sparsity,
                     allocation="adaptive")
compared = {name: plans[(name, sparsity)] for name in ("networks", "contextual", "random")}
fig = plotting.plot_kept_neurons({**compared, "flap (adaptive)": adaptive},
                                 key_neurons=networks.key_neurons_)
display(fig)

# %% [markdown]
# How much do the criteria agree? The overlap (Jaccard index) of the neurons kept by each pair at
# the highest sparsity:

# %%
def kept_set(plan):
    return {(layer, int(n)) for layer, kept in plan.keep.items() for n in kept}


kept = {c: kept_set(plans[(c, sparsity)]) for c in VARIANTS}
overlap = pd.DataFrame([[len(kept[a] & kept[b]) / len(kept[a] | kept[b]) for b in VARIANTS]
                        for a in VARIANTS], index=list(VARIANTS), columns=list(VARIANTS))
overlap.round(2)

# %% [markdown]
# `interpret` states the result in words: the winner at each sparsity and its margin over the
# runner-up, and where it contradicts the published claim that keeping the networks prunes best.
# With one measurement per model there is no spread to judge small differences by: only
# `EVAL_WINDOWS * 128` tokens are scored.

# %%
print(interpret(results, expectations=PUBLISHED_CLAIMS))

# %% [markdown]
# Reading the ranking: the key neurons found on this small recording are a few percent of all
# neurons, so most of what the plain `"networks"` criterion keeps is chosen by |z| values of maps
# fitted on very little data. `"networks+contextual"` differs from `"contextual"` only in forcing
# the key neurons in, which is the comparison that isolates their value. Fit the networks on more
# tokens and over several runs (tutorial 02's `NetworkRecurrence`, whose runs `score_neurons`
# accepts as a list and unites) before judging the criterion.

# %% [markdown]
# ## Save, reload, and check
# A pruned model saves like any Hugging Face model plus its per-layer widths; `load_pruned`
# rebuilds the shapes before loading the weights. The reloaded model gives the same logits.

# %%
plan = plans[("networks", sparsity)]
pruned = prune_model(copy.deepcopy(model), plan)
folder = save_pruned(pruned, tokenizer, workdir / "pruned-networks", plan=plan)
reloaded, _ = load_pruned(folder)
inputs = tokenizer("The functional networks of a language model", return_tensors="pt")
with torch.no_grad():
    before, after = pruned(**inputs).logits, reloaded(**inputs).logits
print("identical logits after reload:", torch.equal(before, after))
assert torch.equal(before, after)

# removing a neuron gives exactly the logits of silencing it (tutorial 03's `ablate`)
removed = {layer: np.setdiff1d(np.arange(plan.n_neurons[layer]), kept)
           for layer, kept in plan.keep.items()}
with torch.no_grad(), ablate(model, removed):
    silenced = model(**inputs).logits
print("max |pruned - ablated| logit difference:", float((before - silenced).abs().max()))
print(f"parameters: dense {dense_params:,} -> pruned {count_parameters(reloaded)['n_params']:,} "
      f"({1 - count_parameters(reloaded)['n_params'] / dense_params:.1%} fewer)")

# %% [markdown]
# ## Speed and memory
# Structural pruning shrinks the matrices, so a forward pass does less work. Both models are
# timed on the same random batch; on a busy CPU the timings vary from run to run.

# %%
efficiency = pd.DataFrame({name: measure_efficiency(m, tokenizer, batch_size=2, seq_len=128,
                                                    warmup=1, repeats=3)
                           for name, m in [("dense", model), (f"networks {sparsity:.0%}", pruned)]})
efficiency.loc[["n_params", "n_mlp_params", "weight_bytes", "tokens_per_s"]]

# %% [markdown]
# ## Clean up
# The recordings and models written above live in a temporary folder; remove it. (If the
# notebook stops early, the folder is removed when its kernel exits.)

# %%
shutil.rmtree(workdir, ignore_errors=True)
print("removed", workdir)

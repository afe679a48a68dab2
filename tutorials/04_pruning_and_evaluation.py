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
# This tutorial follows the published recipe: functional networks fitted per layer on the
# outputs of the MLP's up projection and activation, on disjoint text samples; a neuron is key
# when its |z| exceeds a threshold T in any network of any sample, and T is solved so that the
# key neurons are exactly the neurons kept. It compares the recipe with contextual activation,
# weight magnitude, Wanda-sp, FLAP, the loss sensitivity of each neuron (Fisher), Fisher with
# the interactions of neurons inside each layer's loss networks (`loss-networks`) and a random
# control (three seeds), first each with the plan options it was published with, then all
# with one shared plan, on perplexity and a zero-shot task. The settings are tiny so that the
# notebook runs in minutes on a CPU: the benchmark in `benchmarks/bench_pruning.py` gives the
# figures to trust, and the printed numbers, not the text, say which criterion did better here.

# %%
# %matplotlib inline
import atexit
import os
import shutil
import tempfile
import warnings
from functools import partial
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars as text

import numpy as np
import pandas as pd
import torch
from IPython.display import display

import llmbrain
from llmbrain import plotting
from llmbrain.corpus import load_corpus, tokenize_windows
from llmbrain.datasets import (
    DatasetNotFoundError,
    fetch_c4,
    fetch_wikitext2,
    fetch_zeroshot_tasks,
)
from llmbrain.evaluation import (
    count_parameters,
    evaluate_model,
    load_wikitext2,
    measure_efficiency,
)
from llmbrain.evaluation.results import to_wide
from llmbrain.interventions import ablate
from llmbrain.networks import find_networks
from llmbrain.pruning import (
    CRITERIA,
    LOSS_NETWORKS,
    PUBLISHED,
    PlanOptions,
    collect_calibration_stats,
    compare_pruning,
    load_pruned,
    prune,
    save_pruned,
)
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
# The calibration text is cut into windows of 256 tokens once. One pass over them gives each
# neuron's mean, mean |x|, variance and input norm (the statistics of the contextual, Wanda-sp
# and FLAP criteria, and of bias compensation); `loss_sensitivity=True` adds a backward pass
# over the same windows for the Fisher criterion's loss gradients, and `loss_networks` keeps
# the leading eigenvectors of each layer's Gram matrix of per-token loss contributions (the
# loss networks of the `loss-networks` criterion). `find_networks` records the
# same windows at the two hook points of the recipe in one pass and fits the networks of every
# layer on two disjoint halves (runs), with as many components per layer as the recipe scales
# to this width.

# %%
model, tokenizer = llmbrain.load_model("default")
model.eval()
windows = tokenize_windows(calibration_texts, tokenizer, 256, max_tokens=N_TOKENS)
stats = collect_calibration_stats(model, tokenizer, windows, window=256, loss_sensitivity=True,
                                  loss_networks=LOSS_NETWORKS, progress=False)
networks = find_networks(model, tokenizer, windows, n_runs=2, tokens_per_run=N_TOKENS // 2,
                         window=256, random_state=0, verbose=0)
print(f"calibration statistics over {stats.attrs['n_tokens']:,} tokens")
print(networks.summary().splitlines()[0])

# %% [markdown]
# ## Evaluate the dense model
# `evaluate_model` measures one model and returns rows of llmbrain's results table. Perplexity
# follows the pruning literature's protocol (consecutive 128-token windows of the tokenized test
# text, here only the first `EVAL_WINDOWS`; the `protocol` column says whether each window starts
# with a BOS token), and zero-shot accuracy is scored as lm-evaluation-harness does, on the first
# `ZEROSHOT_LIMIT` items of ARC-Easy. Both are far too small for a benchmark: standard errors
# are printed.

# %%
evaluate = partial(evaluate_model, tokenizer=tokenizer, model_name="default", text=eval_text,
                   dataset=eval_name, window=128, max_windows=EVAL_WINDOWS,
                   zeroshot_root=None if zeroshot is None else zeroshot.root,
                   tasks=() if zeroshot is None else zeroshot.tasks, limit=ZEROSHOT_LIMIT,
                   progress=False)
dense = evaluate(model, criterion="dense")
dense_params = count_parameters(model)["n_params"]
to_wide(dense)

# %% [markdown]
# ## Prune with every criterion, each with its published plan
# A criterion only scores neurons (higher = keep); `PlanOptions` say how the scores become a
# smaller model: how removals spread over layers, which layers stay whole and how the removed
# neurons' mean output is folded into the output bias. `PUBLISHED` holds the options each
# method was published with: the recipe solves one threshold over all prunable layers
# (`global`), keeps the first 3 and last 2 layers whole (they count in the budget) and
# measures the bias compensation on the model as it is pruned (`progressive`); FLAP searches
# its structure adaptively with compensation from the dense model; the others prune every layer
# by the same fraction. `compare_pruning` prunes a fresh copy for every criterion, sparsity and
# seed and evaluates it.

# %%
for name in CRITERIA:
    print(f"{name:>10}: {PUBLISHED[name].describe()}")
seeds = {"random": [0, 1, 2]}
published, plans, _ = compare_pruning(model, CRITERIA, SPARSITIES, evaluate, seeds=seeds,
                                      calibration=stats, calibration_windows=windows,
                                      networks=networks, progress=False)
results = pd.concat([dense, published], ignore_index=True)
to_wide(results)

# %% [markdown]
# `results` is llmbrain's tidy results table, one measured number per row; `to_wide` makes it
# a table for people, and the figures read it directly. Each curve starts at the dense model;
# the random control is the mean of its seeds with their spread.

# %%
fig = plotting.plot_pruning_curves(results)
display(fig)

# %% [markdown]
# ## The same plan for every criterion
# Published options mix two things: how good a criterion's scores are, and how good its plan
# is. Giving every criterion the same options isolates the scores. Here all criteria keep the
# first 3 and last 2 layers, prune the others uniformly and get progressive bias compensation.

# %%
sparsity = max(SPARSITIES)
shared = PlanOptions("uniform", protect_first=3, protect_last=2,
                     bias_compensation="progressive")
same_plan, same_plans, _ = compare_pruning(model, CRITERIA, [sparsity], evaluate, options=shared,
                                           seeds=seeds, calibration=stats,
                                           calibration_windows=windows, networks=networks,
                                           progress=False)
to_wide(same_plan)

# %% [markdown]
# Under uniform allocation every criterion keeps the same number of neurons per layer; the
# recipe's global threshold and FLAP's adaptive search spread the cuts differently. The figure
# shows how many neurons each layer keeps under each published plan.

# %%
compared = {name: plans[(name, sparsity, 0)] for name in ("networks", "flap", "wanda-sp")}
fig = plotting.plot_kept_neurons(compared)
display(fig)

# %% [markdown]
# How much do the criteria agree? The overlap (Jaccard index) of the neurons kept by each pair
# under the shared plan at the highest sparsity:

# %%
def kept_set(plan):
    return {(layer, int(n)) for layer, kept in plan.keep.items() for n in kept}


kept = {c: kept_set(same_plans[(c, sparsity, 0)]) for c in CRITERIA}
overlap = pd.DataFrame([[len(kept[a] & kept[b]) / len(kept[a] | kept[b]) for b in CRITERIA]
                        for a in CRITERIA], index=list(CRITERIA), columns=list(CRITERIA))
overlap.round(2)

# %% [markdown]
# `interpret` states the result in words: the winner at each sparsity and its margin over the
# runner-up, and where it contradicts the published claim that keeping the networks prunes best.
# With only `EVAL_WINDOWS * 128` tokens scored, small differences are noise; on WikiText-2 at
# benchmark size (`benchmarks/results/pruning-40k/pruning.md`) the recipe is far better than
# random but does not beat FLAP or Wanda-sp on this model, while the loss networks do, as the
# README reports.

# %%
print(interpret(results, expectations=PUBLISHED_CLAIMS))

# %% [markdown]
# ## Save, reload, and check
# A pruned model saves like any Hugging Face model plus its per-layer widths; `load_pruned`
# rebuilds the shapes before loading the weights. The reloaded model gives the same logits.
# (Pruned here without bias compensation, so that the last check below holds exactly.)

# %%
pruned, plan = prune(model, "networks", sparsity, networks=networks,
                     options=PUBLISHED["networks"].replace(bias_compensation="none"))
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

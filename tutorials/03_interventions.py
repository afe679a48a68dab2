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
# # 03 · Lesions and stimulation: ablating and amplifying networks
#
# Neuroscience tests whether a region matters by changing it: a lesion (or a TMS pulse that
# silences it) and a stimulation that drives it harder. The effect only means something next to a
# control: a lesion of the same size somewhere else. In a language model both are exact and
# reversible: *ablating* a network sets its neurons to zero, *amplifying* it multiplies them, and
# the control is a set of random neurons with the same count in every layer.
#
# This tutorial finds networks as in tutorial 02, then measures the perplexity of a held-out text
# (documents the networks were not fitted on) with each network ablated or amplified, next to
# matched random controls. Key neurons are a few percent of all neurons; the published finding
# (arXiv 2502.20408) is that silencing them hurts the model far more than silencing as many
# random neurons.

# %%
# %matplotlib inline
import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars as text

import torch
from IPython.display import display

import llmbrain
from llmbrain import plotting
from llmbrain.corpus import load_corpus
from llmbrain.evaluation import perplexity
from llmbrain.evaluation.results import results_table
from llmbrain.interventions import ablate, amplify, matched_random
from llmbrain.networks import KEY_NEURON_THRESHOLD, FunctionalNetworks
from llmbrain.report import compare_to_controls, interpret

N_TOKENS = int(os.environ.get("LLMBRAIN_TUTORIAL_TOKENS", 2048))  # raise it for real analyses
N_COMPONENTS = int(os.environ.get("LLMBRAIN_TUTORIAL_COMPONENTS", 8))
EVAL_WINDOWS = int(os.environ.get("LLMBRAIN_TUTORIAL_EVAL_WINDOWS", 4))  # windows of 128 tokens
N_CONTROLS = int(os.environ.get("LLMBRAIN_TUTORIAL_CONTROLS", 10))  # random sets per target
THRESHOLD = KEY_NEURON_THRESHOLD  # 3.6, the papers' key-neuron threshold
workdir = Path(tempfile.mkdtemp(prefix="llmbrain-tutorial-03-"))
atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # also if the notebook stops early

# %% [markdown]
# ## Fitting text and held-out text
# The built-in corpus (CPython's documentation) is a list of documents. The last documents are
# held out for the perplexity measurements; the networks are fitted on the first ones, so the two
# texts never overlap.

# %%
documents = load_corpus("default")
n_held_out = 1  # the last documents, enough of them for EVAL_WINDOWS windows of 128 tokens
while sum(len(d) for d in documents[-n_held_out:]) < EVAL_WINDOWS * 128 * 6:
    n_held_out += 1
fit_documents, held_out_documents = documents[:-n_held_out], documents[-n_held_out:]
held_out_text = "\n\n".join(held_out_documents)
print(f"{len(fit_documents)} documents to fit, {len(held_out_documents)} held out "
      f"({len(held_out_text):,} characters)")

# %%
model, tokenizer = llmbrain.load_model("default")
model.eval()
ds = llmbrain.record(model, tokenizer, fit_documents, workdir / "activations.zarr",
                     window=256, batch_size=8, max_tokens=N_TOKENS)
networks = FunctionalNetworks(n_components=N_COMPONENTS, scope="all", n_init=3,
                              threshold=THRESHOLD, random_state=0, verbose=0).fit(ds)
print(networks.summary())

# %% [markdown]
# ## The targets
# We intervene on the two largest networks and on the union of all key neurons. A target is a
# boolean (layer, neuron) mask; `matched_random` draws, for every layer, as many neurons as the
# target has there, among the neurons outside it.

# %%
masks = networks.network_masks_
sizes = masks.sum(("layer", "neuron")).to_series().sort_values(ascending=False)
targets = {f"network {c}": masks.sel(component=c) for c in sizes.index[:2]}
targets["all key neurons"] = networks.key_neurons_
for name, mask in targets.items():
    control = matched_random(mask, seed=0, exclude=True)
    assert (control.sum("neuron").values == mask.sum("neuron").values).all()
    assert not (control & mask).any()
    print(f"{name}: {int(mask.sum())} neurons in {int(mask.any('neuron').sum())} layers")

# %% [markdown]
# ## Perplexity under interventions
# Every measurement uses the same held-out windows. `ablate` and `amplify` are context managers:
# they hook the input of each layer's down projection and remove the hooks on exit, so the model
# is unchanged afterwards.

# %%
def held_out_perplexity():
    with torch.no_grad():
        ppl, details = perplexity(model, tokenizer, held_out_text, window=128,
                                  max_windows=EVAL_WINDOWS, progress=False, return_details=True)
    assert details["n_windows"] == EVAL_WINDOWS, details
    return ppl


baseline = held_out_perplexity()
print(f"unmodified model: perplexity {baseline:.3f} on {EVAL_WINDOWS} windows of 128 tokens")

interventions = {"ablate": lambda mask: ablate(model, mask),
                 "amplify": lambda mask: amplify(model, mask, scale=3.0)}
rows = [{"metric": "perplexity", "value": baseline}]  # the unmodified model
for name, mask in targets.items():
    for intervention, apply in interventions.items():
        with apply(mask):
            rows.append({"intervention": intervention, "target": name, "condition": "network",
                         "metric": "perplexity", "value": held_out_perplexity()})
        for seed in range(N_CONTROLS):
            with apply(matched_random(mask, seed=seed, exclude=True)):
                rows.append({"intervention": intervention, "target": name,
                             "condition": "random", "seed": seed, "metric": "perplexity",
                             "value": held_out_perplexity()})
assert abs(held_out_perplexity() - baseline) < 1e-6  # hooks removed: the model is unchanged
results = results_table(rows, model="default", dataset="held-out built-in documents",
                        protocol=f"window=128, {EVAL_WINDOWS} windows")
results.head()

# %% [markdown]
# `results` is llmbrain's tidy results table: one measured number per row, with the
# intervention, its target, whether the neurons were the target itself or a random control
# (`condition`), the seed of the control, the data and the protocol. Plots and reports read it
# as it is.

# %%
fig = plotting.plot_intervention_effects(results)
display(fig)

# %% [markdown]
# ## Did the networks matter?
# A target matters when its effect lies beyond what random neurons of the same size do.
# `compare_to_controls` sets each target against the 95% prediction interval of its controls
# (where a further control would fall) and gives the permutation p-value (the share of controls
# at least as harmful; with `N_CONTROLS` controls it cannot go below 1 / (N_CONTROLS + 1)). At
# least 10 controls per target are needed to judge; `interpret` then says in words what the
# table shows, next to the published claim that silencing key neurons hurts far more than
# silencing random ones.

# %%
compare_to_controls(results).round(3)

# %%
print(interpret(results, expectations={"networks_matter": True,
                                       "source": "arXiv:2502.20408"}))

# %% [markdown]
# How to read it: with a few hundred evaluation tokens and a recording of a few thousand, the
# networks are noisy and so are their effects; raise `EVAL_WINDOWS`, `N_CONTROLS` and the number
# of fitted tokens before drawing conclusions. Mean ablation (`ablate(model, mask, mode="mean",
# means=stats)` with calibration statistics from `llmbrain.pruning`) is a gentler lesion that
# keeps each neuron's average contribution.

# %% [markdown]
# ## Clean up
# The recordings and models written above live in a temporary folder; remove it. (If the
# notebook stops early, the folder is removed when its kernel exits.)

# %%
shutil.rmtree(workdir, ignore_errors=True)
print("removed", workdir)

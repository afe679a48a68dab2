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
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch
from IPython.display import display

import llmbrain
from llmbrain import plotting
from llmbrain.corpus import load_corpus
from llmbrain.evaluation import perplexity
from llmbrain.interventions import ablate, amplify, matched_random
from llmbrain.networks import FunctionalNetworks

N_TOKENS = int(os.environ.get("LLMBRAIN_TUTORIAL_TOKENS", 2048))  # raise it for real analyses
N_COMPONENTS = int(os.environ.get("LLMBRAIN_TUTORIAL_COMPONENTS", 8))
EVAL_WINDOWS = int(os.environ.get("LLMBRAIN_TUTORIAL_EVAL_WINDOWS", 4))  # windows of 128 tokens
N_CONTROLS = 2  # random control sets per condition
THRESHOLD = 3.6
workdir = Path(tempfile.mkdtemp(prefix="llmbrain-tutorial-03-"))

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
                 "amplify x3": lambda mask: amplify(model, mask, scale=3.0)}
rows = []
for name, mask in targets.items():
    for intervention, apply in interventions.items():
        with apply(mask):
            rows.append(dict(network=name, intervention=intervention, condition="network",
                             seed=-1, metric="perplexity", value=held_out_perplexity()))
        for seed in range(N_CONTROLS):
            with apply(matched_random(mask, seed=seed, exclude=True)):
                rows.append(dict(network=name, intervention=intervention, condition="random",
                                 seed=seed, metric="perplexity", value=held_out_perplexity()))
effects = pd.DataFrame(rows)
assert abs(held_out_perplexity() - baseline) < 1e-6  # hooks removed: the model is unchanged
effects

# %% [markdown]
# The table below sets each network's effect against its random controls (the ratio of
# perplexities to the unmodified model).

# %%
summary = (effects.assign(ratio=effects["value"] / baseline)
           .groupby(["network", "intervention", "condition"])["ratio"].mean().unstack("condition"))
summary["network / random"] = summary["network"] / summary["random"]
summary.round(3)

# %%
fig = plotting.plot_intervention_effects(effects, baseline={"perplexity": baseline})
display(fig)

# %% [markdown]
# How to read it: a network matters for this text when its ablation raises the perplexity well
# above the spread of its random controls. With `N_CONTROLS` random sets and a few hundred
# evaluation tokens, small differences are within noise; raise `EVAL_WINDOWS`, `N_CONTROLS` and
# the number of fitted tokens before drawing conclusions. Mean ablation (`ablate(model, mask,
# mode="mean", means=stats)` with calibration statistics from `llmbrain.pruning`) is a gentler
# lesion that keeps each neuron's average contribution.

# %%
ablated = effects.query("intervention == 'ablate'")
for name in targets:
    own = ablated.query("network == @name and condition == 'network'")["value"].iloc[0]
    controls = ablated.query("network == @name and condition == 'random'")["value"]
    verdict = "above" if own > controls.max() else "not above"
    print(f"{name:>16}: ablated {own:9.3f}  random controls {controls.min():.3f}-"
          f"{controls.max():.3f}  -> {verdict} every control")

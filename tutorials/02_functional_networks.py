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
# # 02 · Functional networks of an LLM with CanICA
#
# Resting-state fMRI finds *functional networks*: sets of voxels, often far apart, whose signals
# rise and fall together. The standard tool is group ICA (CanICA): z-score every voxel over time,
# reduce the data with PCA, and unmix the reduced maps with ICA so that each component is a
# spatial map of one network. Thresholding the z-scored maps (|z| > ~3.6) picks the voxels that
# belong to each network.
#
# The same recipe applied to the MLP neurons of a language model (arXiv 2502.20408) finds small
# sets of neurons, spread over many layers, that act together; those *key neurons* are what the
# pruning tutorials keep. This tutorial records a few thousand tokens, fits networks over all
# layers with llmbrain's torch CanICA, compares it with nilearn's DictLearning on one layer,
# links the networks' time courses to the words that drive them, and checks whether the
# networks recur on disjoint tokens.
#
# The defaults are small so that the notebook runs in a few minutes on a laptop CPU; the
# published analyses use far more tokens and components, and the numbers printed here are noisy.

# %%
# %matplotlib inline
import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars as text

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

import llmbrain
from llmbrain import plotting
from llmbrain.networks import (KEY_NEURON_THRESHOLD, FunctionalNetworks, NetworkRecurrence,
                               load_networks, match_components, save_networks)

N_TOKENS = int(os.environ.get("LLMBRAIN_TUTORIAL_TOKENS", 3072))  # raise it for real analyses
N_COMPONENTS = int(os.environ.get("LLMBRAIN_TUTORIAL_COMPONENTS", 10))
THRESHOLD = KEY_NEURON_THRESHOLD  # 3.6, the papers' key-neuron threshold
workdir = Path(tempfile.mkdtemp(prefix="llmbrain-tutorial-02-"))
atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # also if the notebook stops early

# %% [markdown]
# ## Record the neurons
# As in tutorial 01: every MLP neuron is a voxel and every token a time point.

# %%
model, tokenizer = llmbrain.load_model("default")
ds = llmbrain.record(model, tokenizer, "default", workdir / "activations.zarr",
                     window=256, batch_size=8, max_tokens=N_TOKENS)
print(dict(ds.sizes))

# %% [markdown]
# ## CanICA over all layers
# `FunctionalNetworks` is an estimator in the scikit-learn sense: the constructor stores the
# parameters and `fit` does the work. With `scope="all"` the 30 layers form one 46,080-voxel
# "brain", so a network may span layers, as fMRI networks span lobes. The tokens are split into
# `n_groups` consecutive blocks that play the part of subjects: each is reduced by its own PCA
# before a group PCA and FastICA (CanICA's three stages). The fit runs in torch, on a GPU when
# `device="cuda"`.

# %%
canica = FunctionalNetworks(n_components=N_COMPONENTS, scope="all", n_groups=4, n_init=3,
                            threshold=THRESHOLD, random_state=0, verbose=0)
canica.fit(ds)
print(canica.summary())

# %% [markdown]
# The z-scored maps (`maps_z_`) have dims (component, layer, neuron). Each panel below is one
# network drawn as a layer × neuron image, with the neurons under the threshold in grey.

# %%
fig = plotting.plot_networks(canica.maps_z_, threshold=THRESHOLD, kind="grid")
display(fig)

# %% [markdown]
# An *atlas* colours every neuron by the network where its |z| is largest, like a
# parcellation; the bars count the key neurons of each network in each layer.

# %%
fig = plotting.plot_network_atlas(canica.maps_z_, threshold=THRESHOLD)
display(fig)
fig = plotting.plot_key_neurons(canica.network_masks_)
display(fig)

# %%
key = canica.key_neurons_
sizes = canica.network_masks_.sum(("layer", "neuron")).to_series()
print(f"{int(key.sum())} key neurons of {key.size} ({key.mean().item():.1%}): |z| > {THRESHOLD} "
      "in at least one network (the union over networks)")
print("key neurons per network:", sizes.to_dict())

# %% [markdown]
# The maps are also NIfTI images (x, y = neurons of a layer, z = layer), so nilearn's viewers
# work on them unchanged. Here is the first network, one axial slice per layer; no template
# brain and no left/right letters, which would invent anatomy.

# %%
from nilearn import image
from nilearn import plotting as niplot

first_map = image.index_img(canica.maps_z_img_, 0)
niplot.plot_stat_map(first_map, bg_img=None, display_mode="z", cut_coords=[0, 6, 12, 18, 24, 29],
                     threshold=THRESHOLD, colorbar=True, black_bg=False, annotate=False,
                     draw_cross=False, title=f"network 0, |z| > {THRESHOLD}, layers 0, 6, 12, 18, 24, 29")
plt.show()

# %% [markdown]
# llmbrain's own view draws every layer, with voxel-index axes:

# %%
fig = plotting.plot_layer_slices(canica.maps_z_, component=0, threshold=THRESHOLD)
display(fig)

# %% [markdown]
# ## Comparison: nilearn's DictLearning on one layer
# nilearn offers a second decomposition, dictionary learning, which looks for sparse maps
# instead of independent ones. `backend="nilearn"` builds the NIfTI images and runs nilearn's
# own estimator. It is slower and in memory, so we run it on one layer, next to the torch CanICA
# on the same layer, and pair their maps with the Hungarian algorithm on |r|.

# %%
LAYER = 12
canica_layer = FunctionalNetworks(n_components=8, layers=[LAYER], scope="layer", n_init=3,
                                  random_state=0, verbose=0).fit(ds)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Objective did not converge")
    dictlearning = FunctionalNetworks(n_components=8, method="dictlearning", backend="nilearn",
                                      layers=[LAYER], n_init=1, random_state=0,
                                      verbose=0).fit(ds)
print(canica_layer.summary().splitlines()[1])
print(dictlearning.summary().splitlines()[1])
match, r = match_components(canica_layer.maps_z_, dictlearning.maps_z_)
print(pd.DataFrame({"dictlearning component": match, "|r|": np.abs(r).round(2)},
                   index=pd.Index(range(len(match)), name="canica component")))

# %%
best = int(np.nanargmax(np.abs(r)))
fig = plt.figure(figsize=(9, 5.2), layout="constrained")
top, bottom = fig.subplots(2, 1)
plotting.plot_network_map(canica_layer.maps_z_, best, threshold=THRESHOLD, ax=top,
                          title=f"CanICA (torch), network {best}")
plotting.plot_network_map(dictlearning.maps_z_, int(match[best]), threshold=THRESHOLD,
                          ax=bottom, title=f"DictLearning (nilearn), network {int(match[best])}")
fig.suptitle(f"Layer {LAYER}: the best-matched pair of maps, |r| = {abs(r[best]):.2f}")
plt.show()

# %% [markdown]
# ## Which words drive which network?
# `transform` gives the time course of every network: the least-squares fit of each token's
# z-scored neurons on the thresholded maps, as nilearn's dual regression does. The tokens where a
# network peaks tell what it responds to.

# %%
timecourses = canica.transform(ds)
top = {}
for c in timecourses["component"].values:
    values = timecourses.sel(component=c).values
    order = np.argsort(values)[::-1][:8]
    top[f"network {c}"] = [repr(str(timecourses["token_text"].values[i])) for i in order]
pd.DataFrame(top).T.rename(columns=lambda i: f"top {i + 1}")

# %% [markdown]
# The time courses over a passage of text, one panel per network on a shared scale (small
# multiples stay readable with many networks; `kind="heatmap"` draws them as one image). The
# first token of the window, the BOS token, is left out (`start=1`).

# %%
fig = plotting.plot_timecourses(timecourses, start=1, stop=61)
display(fig)

# %% [markdown]
# ## Do the networks recur?
# A network is only interesting if it comes back on other data. `NetworkRecurrence` fits the
# networks on disjoint blocks of tokens ("runs") and pairs each network of the first run with a
# network of every other run by spatial correlation. The union of the key neurons over runs is
# what pruning keeps (arXiv 2508.05239).
#
# With about a thousand tokens per run the maps are noisy: the numbers below illustrate the
# analysis rather than measure the model. How many networks recur depends on the tokens per run,
# the number of components and the recurrence cutoff; check it on your own data and settings.

# %%
recurrence = NetworkRecurrence(FunctionalNetworks(n_components=N_COMPONENTS, scope="all", n_init=3,
                                                  threshold=THRESHOLD, random_state=0, verbose=0),
                               n_runs=3, verbose=0).fit(ds)
print(recurrence.summary())
fig = plotting.plot_recurrence(recurrence.result_)
display(fig)

# %%
votes = recurrence.result_["key_neurons_votes"]
print("key neurons per number of runs where they are key:",
      {int(v): int((votes == v).sum()) for v in range(1, recurrence.n_runs + 1)})
print("key in at least one run (union over runs):", int(recurrence.key_neurons_union_.sum()),
      "| in a majority of runs:", int(recurrence.key_neurons_majority_.sum()))

# %% [markdown]
# ## Save and load
# Networks are saved as a Zarr dataset plus NIfTI images of the maps, readable by any
# neuroimaging tool; `load_networks` gives back a fitted estimator.

# %%
folder = save_networks(canica, workdir / "networks")
print(sorted(p.name for p in folder.iterdir()))
reloaded = load_networks(folder)
assert np.array_equal(reloaded.key_neurons_.values, canica.key_neurons_.values)
assert np.allclose(reloaded.maps_z_.values, canica.maps_z_.values)
print("reloaded networks: identical key neurons and maps")

# %% [markdown]
# ## Clean up
# The recordings and models written above live in a temporary folder; remove it. (If the
# notebook stops early, the folder is removed when its kernel exits.)

# %%
shutil.rmtree(workdir, ignore_errors=True)
print("removed", workdir)

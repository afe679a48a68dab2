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
# # 05 · Domain pruning: a lawyer's model and a doctor's model
#
# Brain regions are recruited by tasks: reading a contract and reading a case report do not
# engage the same circuits. *Contextual pruning* (arXiv 2312.12682) uses the same fact in a
# language model: run text of one domain through it, keep the neurons that are most active on
# that domain (mean |activation|), and remove the rest. The result is a smaller model for that
# domain, a "Mini-GPT".
#
# This tutorial calibrates on legal text and, separately, on medical text, prunes a copy of the
# model for each, and measures perplexity in and out of domain: on held-out legal text, held-out
# medical text and general text (WikiText-2). A model pruned with random scores at the same
# sparsity is the control. The settings are small so that the notebook runs in minutes; with a
# few hundred evaluation tokens per cell, treat small differences as noise.

# %%
# %matplotlib inline
import atexit
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars as text

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import llmbrain
from llmbrain import plotting
from llmbrain.corpus import load_corpus
from llmbrain.datasets import DatasetNotFoundError, fetch_dataset, fetch_wikitext2
from llmbrain.evaluation import load_text, load_wikitext2, perplexity
from llmbrain.evaluation.results import results_table, to_wide
from llmbrain.pruning import collect_calibration_stats, prune

N_TOKENS = int(os.environ.get("LLMBRAIN_TUTORIAL_TOKENS", 1024))  # calibration tokens per domain
EVAL_WINDOWS = int(os.environ.get("LLMBRAIN_TUTORIAL_EVAL_WINDOWS", 4))  # windows of 128 tokens
SPARSITY = float(os.environ.get("LLMBRAIN_TUTORIAL_SPARSITY", 0.3))
workdir = Path(tempfile.mkdtemp(prefix="llmbrain-tutorial-05-"))
atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # also if the notebook stops early

# %% [markdown]
# ## Domain texts
# The texts are not part of llmbrain. `llmbrain.datasets` finds them in the data directory (the
# `LLMBRAIN_DATA` environment variable, else `~/llmbrain_data`), checks their catalogued
# checksums, and downloads what is missing when asked to (`download=True`, the default; this
# notebook passes `download=False` so that it never waits on a network). It uses:
#
# * **legal**: the US Code, calibrating on Title 11 (bankruptcy) and evaluating on Title 17
#   (copyright), two different files;
# * **medical**: PubMedQA abstracts, calibrating on the abstracts outside PubMedQA's official test
#   split and evaluating on the test split's abstracts;
# * **general**: WikiText-2 test, for neither domain.
#
# Without the data it falls back to the built-in corpus (CPython's documentation), split
# into two halves that stand in for the two "domains": they are the same kind of text, so the
# cross table then shows no domain effect, only the mechanics.

# %%
def pubmedqa_abstracts(folder):
    """Abstracts of PubMedQA (PQA-L), split into (not in the test split, in the test split)."""
    items = json.loads((folder / "ori_pqal.json").read_text())
    test_ids = set(json.loads((folder / "test_ground_truth.json").read_text()))
    abstracts = {pmid: "\n".join(item["CONTEXTS"]) for pmid, item in items.items()}
    return ([text for pmid, text in abstracts.items() if pmid not in test_ids],
            [text for pmid, text in abstracts.items() if pmid in test_ids])


try:
    uscode = fetch_dataset("uscode", download=False)
    pubmedqa = fetch_dataset("pubmedqa", download=False)
    wikitext = fetch_wikitext2(download=False)
except DatasetNotFoundError as err:
    print(str(err).splitlines()[0])
    uscode = None
if uscode is not None:
    titles = {path.stem: path for path in uscode.files}
    medical_calibration, medical_test = pubmedqa_abstracts(pubmedqa.files[0].parent)
    calibration = {"legal": [load_text(titles["Title_11"])],
                   "medical": medical_calibration}
    evaluation = {"legal": load_text(titles["Title_17"]),
                  "medical": "\n\n".join(medical_test),
                  "general": load_wikitext2(wikitext.path)}
    print("data directory:", uscode.root)
else:
    documents = load_corpus("default")
    half = len(documents) // 2
    calibration = {"legal": documents[:half - 8], "medical": documents[half:-8]}
    evaluation = {"legal": "\n\n".join(documents[half - 8:half]),
                  "medical": "\n\n".join(documents[-8:])}
    print("the two 'domains' are halves of the built-in corpus instead")
# the windows scored are the first ones: a generous prefix of each text gives the same windows
evaluation = {name: text[:EVAL_WINDOWS * 128 * 12] for name, text in evaluation.items()}
for name, text in evaluation.items():
    print(f"evaluation text {name}: {len(text):,} characters, starts {text[:70]!r}")

# %% [markdown]
# ## Calibrate and prune per domain
# `collect_calibration_stats` runs the domain text through the model once and keeps every
# neuron's statistics; the `"contextual"` criterion ranks neurons by their mean |activation|.
# `prune` scores, plans and prunes a copy of the model in one call; with the criterion's
# published plan options every layer loses the same fraction `SPARSITY` of its neurons.

# %%
model, tokenizer = llmbrain.load_model("default")
model.eval()
stats, plans, models = {}, {}, {"dense": model}
for domain, texts in calibration.items():
    stats[domain] = collect_calibration_stats(model, tokenizer, texts, window=256,
                                              max_tokens=N_TOKENS, progress=False)
    models[f"{domain}-pruned"], plans[domain] = prune(model, "contextual", SPARSITY,
                                                      calibration=stats[domain])
models["random-pruned"], plans["random"] = prune(model, "random", SPARSITY, seed=0)
print({domain: s.attrs["n_tokens"] for domain, s in stats.items()}, "calibration tokens")

# %% [markdown]
# How different are the two domain models? The fraction of kept neurons they share, per layer:
# contextual pruning keeps many of the same generally active neurons, and the rest is where the
# domains differ.

# %%
def kept_overlap(a, b):
    return pd.Series({layer: len(np.intersect1d(a.keep[layer], b.keep[layer])) / len(a.keep[layer])
                      for layer in a.keep}, name="shared fraction")


shared = kept_overlap(plans["legal"], plans["medical"])
print(f"legal and medical models share {shared.mean():.1%} of their kept neurons on average "
      f"(random pair of plans at this sparsity: ~{1 - SPARSITY:.0%}); "
      f"least in layer {shared.idxmin()} ({shared.min():.1%})")
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.plot(shared.index, shared.values, marker="o", label="legal vs medical (contextual)")
ax.axhline(1 - SPARSITY, color="grey", ls="--", label="expected for two random plans")
ax.set(xlabel="layer", ylabel="shared kept neurons", ylim=(0, 1.05),
       title="Overlap of the neurons kept by the two domain models")
ax.legend(frameon=False, loc="lower left")
plt.show()

# %% [markdown]
# ## In and out of domain: the cross table
# Every model is scored on the first `EVAL_WINDOWS` windows of 128 tokens of every evaluation
# text. The scores go into llmbrain's results table (one number per row, with the criterion and
# the calibration data that made each model); `to_wide` lays them out as models × texts.

# %%
pruning = {"dense": {"criterion": "dense"},
           "random-pruned": {"criterion": "random", "sparsity": SPARSITY, "seed": 0}}
pruning.update({f"{domain}-pruned": {"criterion": "contextual", "calibration": domain,
                                     "sparsity": SPARSITY} for domain in calibration})
rows = []
for name, m in models.items():
    for corpus, text in evaluation.items():
        with torch.no_grad():
            ppl, details = perplexity(m, tokenizer, text, window=128, max_windows=EVAL_WINDOWS,
                                      progress=False, return_details=True)
        assert details["n_windows"] == EVAL_WINDOWS, (name, corpus, details)
        rows.append({**pruning[name], "dataset": corpus, "metric": "perplexity", "value": ppl,
                     "n": EVAL_WINDOWS})
results = results_table(rows, model="default", allocation="uniform", protocol="window=128")
table = to_wide(results, index=["criterion", "calibration"], columns=["dataset"])
table.index = pd.Index(list(models), name="model")  # rows in the order the models were scored
table = table[list(evaluation)]
table.round(2)

# %% [markdown]
# Relative to the dense model (1.0 = no loss):

# %%
relative = table / table.loc["dense"]
relative.round(3)

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
pruned_names = [name for name in models if name != "dense"]
width = 0.8 / len(pruned_names)
x = np.arange(len(evaluation))
for i, (name, color) in enumerate(zip(pruned_names, plotting.network_colors(len(pruned_names)))):
    ax.bar(x + (i - (len(pruned_names) - 1) / 2) * width, relative.loc[name], width, label=name,
           color=color)
ax.axhline(1.0, color="black", lw=1, ls="--", label="dense")
ax.set_yscale("log")
ax.set(xticks=x, xticklabels=list(evaluation), ylabel="perplexity / dense perplexity (log)",
       title=f"Domain pruning at {SPARSITY:.0%} of MLP neurons")
ax.legend(frameon=False)
plt.show()

# %%
for domain in calibration:
    own = relative.loc[f"{domain}-pruned", domain]
    others = {c: relative.loc[f"{d}-pruned", domain] for d in calibration if d != domain
              for c in [f"{d}-pruned"]}
    other_text = ", ".join(f"{c} x{v:.2f}" for c, v in others.items())
    print(f"on {domain} text: {domain}-pruned x{own:.2f}, {other_text}, "
          f"random x{relative.loc['random-pruned', domain]:.2f} -> the in-domain model is "
          f"{'best' if own <= min(others.values()) else 'not best'} here")

# %% [markdown]
# ## Clean up
# The recordings and models written above live in a temporary folder; remove it. (If the
# notebook stops early, the folder is removed when its kernel exits.)

# %%
shutil.rmtree(workdir, ignore_errors=True)
print("removed", workdir)

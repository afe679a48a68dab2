"""Perplexity on a text cut into consecutive, non-overlapping windows.

This is the protocol of the pruning literature: SparseGPT, Wanda, LLM-Pruner
and FLAP tokenise the whole WikiText-2 test split once (its rows joined with
``"\\n\\n"``), cut the token stream into consecutive windows of 128 or 2048
tokens (SliceGPT), drop the incomplete tail, and report the exponential of
the mean negative log-likelihood of every predicted token.

Models trained to always see a beginning-of-sequence token at position 0
(the Gemma family) score absurd perplexities on windows cut from the middle
of a token stream. For them each window starts with the BOS token instead:
the stream is cut into pieces of ``window - 1`` tokens and BOS is put in
front of each, so the window still holds ``window`` tokens and every text
token is predicted. :func:`perplexity_protocol` names the protocol used
(``"stream"`` or ``"bos-per-window"``); results tables carry that name.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["PROTOCOLS", "load_text", "load_wikitext2", "needs_bos", "perplexity",
           "perplexity_protocol", "wikitext_rows"]

#: Names of the perplexity protocols (see the module documentation).
PROTOCOLS = ("stream", "bos-per-window")
#: Model families trained to always see BOS first.
_BOS_FAMILIES = ("gemma",)


def wikitext_rows(text: str) -> list[str]:
    """Recover the rows of a WikiText split written as ``"\\n".join(rows)``.

    Hugging Face's ``wikitext-2-raw-v1`` rows are either empty or end with
    ``"\\n"``, so the joined text can be split back without loss.

    Parameters
    ----------
    text : str
        The newline-joined rows.

    Returns
    -------
    rows : list of str
        The exact rows (empty rows are ``""``).
    """
    rows, i, n = [], 0, len(text)
    while True:
        if i < n and text[i] != "\n":
            j = text.find("\n", i)
            if j < 0:
                raise ValueError("The text is not newline-joined WikiText rows: its last row "
                                 "does not end with a newline.")
            rows.append(text[i:j + 1])
            i = j + 1
        else:
            rows.append("")
        if i == n:
            break
        if text[i] != "\n":
            raise ValueError(f"The text is not newline-joined WikiText rows (at character {i}).")
        i += 1
    return rows


def load_wikitext2(path: str | os.PathLike | None = None, *, split: str = "test") -> str:
    """The WikiText-2 (raw) text that the pruning literature evaluates on.

    Parameters
    ----------
    path : str or path-like, optional
        A text file. When it holds Hugging Face rows written as
        ``"\\n".join(rows)`` (every non-empty row ending with ``"\\n"``), the
        rows are recovered and joined with ``"\\n\\n"`` as SparseGPT / Wanda /
        LLM-Pruner do (1,294,336 characters for the test split). Any other
        text file (e.g. the original ``wiki.test.raw``) is returned as is.
        When None, the split is fetched with the ``datasets`` library
        (``wikitext`` / ``wikitext-2-raw-v1``; needs a network).
    split : str, default="test"
        Split to fetch when ``path`` is None.

    Returns
    -------
    text : str
    """
    if path is None:
        try:
            from datasets import load_dataset
        except ImportError as err:
            raise ImportError("Fetching WikiText-2 needs the 'datasets' package "
                              "(pip install datasets) and a network; or pass the path of a "
                              "local copy.") from err
        rows = load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
        return "\n\n".join(rows)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No WikiText-2 file at {path}.")
    text = path.read_text(encoding="utf-8")
    try:
        rows = wikitext_rows(text)
    except ValueError:
        return text
    return "\n\n".join(rows)


def load_text(path: str | os.PathLike) -> str:
    """Plain text of a corpus file for a perplexity measurement.

    ``.txt`` files are read as they are (Windows line ends become ``"\\n"``);
    ``.jsonl`` files give the ``"text"`` field of every line, joined with
    ``"\\n\\n"``; a PubMedQA-style ``.json`` object (``{id: {"CONTEXTS":
    [...]}}``) gives every abstract, its contexts joined with ``"\\n"``.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    text : str
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No text file at {path}.")
    if path.suffix == ".jsonl":
        texts = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    record = json.loads(line)
                    if "text" not in record:
                        raise ValueError(f"{path} line {n} has no 'text' field; a .jsonl corpus "
                                         "needs one text per line under 'text'.")
                    texts.append(record["text"])
        return "\n\n".join(texts)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and all(isinstance(v, dict) and "CONTEXTS" in v
                                          for v in data.values()):
            return "\n\n".join("\n".join(v["CONTEXTS"]) for v in data.values())
        raise ValueError(f"{path} is not a PubMedQA-style JSON object ({{id: {{'CONTEXTS': "
                         "[...]}}}}); convert it to a .txt or .jsonl file with a 'text' field.")
    return path.read_text(encoding="utf-8").replace("\r\n", "\n")


def needs_bos(model) -> bool:
    """Whether ``model`` belongs to a family that must see BOS at position 0.

    Parameters
    ----------
    model : transformers.PreTrainedModel or PretrainedConfig

    Returns
    -------
    bool
        True for the Gemma family (``model_type`` starting with ``"gemma"``).
    """
    config = getattr(model, "config", model)
    return str(getattr(config, "model_type", "")).startswith(_BOS_FAMILIES)


def perplexity_protocol(model, bos: bool | None = None) -> str:
    """Name of the window protocol :func:`perplexity` uses for ``model``.

    Parameters
    ----------
    model : transformers.PreTrainedModel or PretrainedConfig
    bos : bool or None, default=None
        As :func:`perplexity`'s ``bos``; None chooses by :func:`needs_bos`.

    Returns
    -------
    str
        ``"bos-per-window"`` or ``"stream"``.
    """
    if bos is None:
        bos = needs_bos(model)
    return PROTOCOLS[1] if bos else PROTOCOLS[0]


@torch.inference_mode()
def perplexity(model, tokenizer, text: str, *, window: int = 128, stride: int | None = None,
               batch_size: int = 8, max_windows: int | None = None, device=None,
               add_special_tokens: bool = True, bos: bool | None = None,
               progress: bool = True, return_details: bool = False):
    """Perplexity of ``model`` on ``text`` in consecutive windows.

    The whole text is tokenised once; the token stream is cut into windows of
    ``window`` tokens starting every ``stride`` tokens; an incomplete last
    window is dropped. Each window is scored on its own (its first token is
    context only), and the perplexity is the exponential of the mean
    negative log-likelihood over every predicted token.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal language model.
    tokenizer : transformers.PreTrainedTokenizerBase
    text : str
        The evaluation text, e.g. from :func:`load_wikitext2`.
    window : int, default=128
        Tokens per window: 128 (FLAP, LLM-Pruner) or 2048 (SparseGPT, Wanda,
        SliceGPT).
    stride : int, optional
        Distance between window starts; the default (``window``) gives the
        literature's non-overlapping windows.
    batch_size : int, default=8
        Windows per forward pass.
    max_windows : int, optional
        Score only the first ``max_windows`` windows (quick runs).
    device : str or torch.device, optional
        Defaults to the device of the model's parameters.
    add_special_tokens : bool, default=True
        Passed to the tokenizer (a Llama-2 tokenizer then puts one BOS at the
        very start of the stream, as in the literature).
    bos : bool or None, default=None
        Start every window with the tokenizer's BOS token (protocol
        ``"bos-per-window"``); the stream is then cut into pieces of
        ``window - 1`` tokens (``stride`` counts stream tokens). None turns it
        on for the models that need it (:func:`needs_bos`), off otherwise
        (protocol ``"stream"``, the literature's).
    progress : bool, default=True
        Show a tqdm progress bar.
    return_details : bool, default=False
        Also return a dict with ``nll`` (mean), ``n_windows``, ``n_tokens``
        (predicted tokens), ``protocol``, ``nll_stderr`` (standard error of
        the mean NLL over windows), ``stderr`` (of the perplexity, by the
        delta method: ``ppl * nll_stderr``) and ``window_nll`` (every
        window's mean NLL, in order: two models scored on the same text
        compare window by window, a paired comparison).

    Returns
    -------
    ppl : float
    details : dict
        Only when ``return_details`` is True.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string (e.g. load_wikitext2(path)).")
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}.")
    default_stride = stride is None
    stride = window if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be a positive number of tokens, got {stride}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be a positive integer or None, got {max_windows}.")
    protocol = perplexity_protocol(model, bos)
    bos_id = None
    if protocol == "bos-per-window":
        bos_id = tokenizer.bos_token_id
        if bos_id is None:
            raise ValueError("bos=True needs a tokenizer with a BOS token; this one has none. "
                             "Use bos=False (one token stream, the literature's protocol).")
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device

    saved_max_length = tokenizer.model_max_length
    tokenizer.model_max_length = int(1e30)  # silence the "sequence too long" warning
    try:
        ids = tokenizer(text, add_special_tokens=add_special_tokens,
                        return_tensors="pt").input_ids[0]
    finally:
        tokenizer.model_max_length = saved_max_length
    body = window
    if bos_id is not None:
        if len(ids) and int(ids[0]) == bos_id:
            ids = ids[1:]  # the tokenizer's own leading BOS: every window gets one below
        body = window - 1
        if default_stride:
            stride = body
    starts = list(range(0, len(ids) - body + 1, stride))
    if not starts:
        raise ValueError(f"The text has {len(ids)} tokens, fewer than one window of {window}; "
                         "give a longer text or a smaller window.")
    if max_windows is not None:
        starts = starts[:max_windows]

    total_nll, total_tokens = 0.0, 0
    window_nll = []  # mean NLL of every window, for the standard error
    batches = [starts[s:s + batch_size] for s in range(0, len(starts), batch_size)]
    for batch in tqdm(batches, desc=f"perplexity ({window}-token windows)", disable=not progress,
                      leave=False):
        inputs = torch.stack([ids[s:s + body] for s in batch])
        if bos_id is not None:
            inputs = torch.cat([torch.full((len(batch), 1), bos_id, dtype=inputs.dtype), inputs], 1)
        inputs = inputs.to(device)
        logits = model(input_ids=inputs, use_cache=False).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), inputs[:, 1:].reshape(-1),
                              reduction="none").view(len(batch), -1)
        window_nll.extend(nll.mean(1).double().tolist())
        total_nll += float(nll.double().sum())
        total_tokens += inputs[:, 1:].numel()
    mean_nll = total_nll / total_tokens
    ppl = math.exp(mean_nll)
    if return_details:
        spread = (statistics.stdev(window_nll) / math.sqrt(len(window_nll))
                  if len(window_nll) > 1 else float("nan"))
        return ppl, {"nll": mean_nll, "n_windows": len(starts), "n_tokens": total_tokens,
                     "protocol": protocol, "nll_stderr": spread, "stderr": ppl * spread,
                     "window_nll": window_nll}
    return ppl

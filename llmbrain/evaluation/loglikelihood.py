"""Log-likelihood of continuations given contexts, batched.

The tokenisation follows lm-evaluation-harness (``HFLM``, version 0.4): a
context's trailing whitespace is moved to the continuation, the pair is
encoded as one string and the continuation tokens are the tokens of the whole
string after those of the context; an empty context is replaced by the
end-of-text token. Requests are sorted by length (longest first) so that
batches hold sequences of similar length, and requests whose model input is
identical (same context, one-token continuations such as ``" A"`` .. ``" D"``)
share one forward pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["encode_pair", "loglikelihoods", "model_max_length"]


def model_max_length(model, tokenizer=None, default: int = 2048) -> int:
    """Longest sequence the model accepts, found as lm-evaluation-harness does.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase, optional
    default : int, default=2048
        Used when neither the config nor the tokenizer gives a length.
    """
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    if tokenizer is not None and getattr(tokenizer, "model_max_length", None):
        if tokenizer.model_max_length < 1_000_000_000:
            return int(tokenizer.model_max_length)
    return default


def _encode(tokenizer, text: str) -> list[int]:
    """Encode like lm-eval's ``tok_encode``: the tokenizer's own special
    tokens, except that a string already starting with BOS gets none."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def _prefix_token_id(tokenizer) -> int:
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    raise ValueError("The tokenizer has neither an EOS nor a BOS token, so an empty context "
                     "cannot be scored; give every request a non-empty context.")


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` as lm-eval splits them.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    context : str
        Conditioning text; when empty, the end-of-text token stands for it.
    continuation : str
        Text whose log-likelihood is scored (usually starting with a space).

    Returns
    -------
    context_ids, continuation_ids : list of int
    """
    if context == "":
        continuation_ids = _encode(tokenizer, continuation)
        prefix = _prefix_token_id(tokenizer)
        if continuation_ids and continuation_ids[0] == prefix:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix], continuation_ids
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    context_ids = _encode(tokenizer, context)
    return context_ids, whole[len(context_ids):]


def _accepts_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.inference_mode()
def loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, str]], *, batch_size: int = 16,
                   device=None, max_length: int | None = None, progress: bool = True,
                   desc: str = "log-likelihoods") -> np.ndarray:
    """Summed log-probability of each continuation given its context.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal language model (evaluation mode is set here).
    tokenizer : transformers.PreTrainedTokenizerBase
    requests : sequence of (str, str)
        ``(context, continuation)`` pairs.
    batch_size : int, default=16
        Number of sequences per forward pass.
    device : str or torch.device, optional
        Where to run; defaults to the device of the model's parameters.
    max_length : int, optional
        Sequences longer than this are cut on the left, as lm-eval does;
        defaults to :func:`model_max_length`.
    progress : bool, default=True
        Show a tqdm progress bar.
    desc : str
        Label of the progress bar.

    Returns
    -------
    scores : ndarray of shape (n_requests, 2)
        Column 0 the summed log-likelihood (float64), column 1 whether the
        continuation is the greedy one (1.0) or not (0.0).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    for i, pair in enumerate(requests):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(s, str) for s in pair)):
            raise TypeError(f"Request {i} is {pair!r}; each request must be a "
                            "(context, continuation) pair of strings.")
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    max_length = max_length or model_max_length(model, tokenizer)

    # Model input (all tokens but the last) and the continuation of each request.
    unique_inputs: dict[tuple[int, ...], int] = {}
    plan = []  # (input index, continuation ids)
    for context, continuation in requests:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise ValueError(f"The continuation {continuation!r} of context {context[-60:]!r} "
                             "encodes to no token; give a non-empty continuation.")
        full = (context_ids + continuation_ids)[-(max_length + 1):]
        key = tuple(full[:-1])
        index = unique_inputs.setdefault(key, len(unique_inputs))
        plan.append((index, continuation_ids[-len(full) + 1:] if len(continuation_ids) >= len(full)
                     else continuation_ids))
    inputs = list(unique_inputs)
    # For every unique input, the continuation lengths that read it.
    needed = np.zeros(len(inputs), dtype=np.int64)
    for index, continuation_ids in plan:
        needed[index] = max(needed[index], len(continuation_ids))

    readers: list[list[int]] = [[] for _ in inputs]
    for r, (index, _) in enumerate(plan):
        readers[index].append(r)

    scores = np.zeros((len(requests), 2), dtype=np.float64)
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    keep_arg = _accepts_logits_to_keep(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        lengths = [len(inputs[i]) for i in batch]
        width = max(lengths)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :lengths[row]] = torch.tensor(inputs[i], dtype=torch.long)
        # Right padding under causal attention leaves the real positions untouched,
        # so no attention mask is needed (lm-eval runs the same way).
        keep = max(width - lengths[row] + int(needed[i]) for row, i in enumerate(batch))
        kwargs = {"logits_to_keep": keep} if keep_arg else {}
        logits = model(input_ids=ids.to(device), use_cache=False, **kwargs).logits
        offset = width - logits.shape[1]  # sequence position of logits[:, 0]
        for row, i in enumerate(batch):
            end = lengths[row] - offset
            rows = F.log_softmax(logits[row, end - int(needed[i]):end].float(), dim=-1)
            for r in readers[i]:
                continuation_ids = plan[r][1]
                part = rows[len(rows) - len(continuation_ids):]
                target = torch.tensor(continuation_ids, dtype=torch.long, device=part.device)
                scores[r, 0] = float(part.gather(1, target[:, None]).double().sum())
                scores[r, 1] = float(bool((part.argmax(dim=-1) == target).all()))
    return scores

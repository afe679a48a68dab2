"""Zero-shot multiple-choice tasks read from local files, with the prompts of
lm-evaluation-harness.

Each loader returns :class:`MultipleChoiceItem` objects built exactly as
lm-evaluation-harness (0.4) builds its requests: the prompt
(``doc_to_text``), the answer strings (``doc_to_choice``), the target
delimiter ``" "`` between them, and the gold index (``doc_to_target``).

Expected layout under a data root (the file names of the original releases):

=============  ==========================================================
task           file(s)
=============  ==========================================================
piqa           ``piqa/valid.jsonl`` + ``piqa/valid-labels.lst``
arc_easy       ``arc/ARC-Easy-Test.jsonl``
arc_challenge  ``arc/ARC-Challenge-Test.jsonl``
hellaswag      ``hellaswag/hellaswag_val_full.txt`` (llama.cpp text format)
winogrande     ``winogrande/dev.jsonl`` (winogrande_1.1, the validation split)
boolq          ``boolq/boolq_dev_llmfoundry.jsonl`` (llm-foundry format)
openbookqa     ``openbookqa/openbookqa_test_llmfoundry.jsonl`` (llm-foundry)
=============  ==========================================================

Where the local files are conversions, the prompts are rebuilt as follows:

* HellaSwag (llama.cpp format: ``activity_label: ctx`` already passed
  through lm-eval's ``preprocess``). lm-eval writes ``ctx_a + " " +
  ctx_b.capitalize()``; the split between ``ctx_a`` and ``ctx_b`` is not
  kept, so the first letter after the context's last sentence end is
  upper-cased when it is lower case (ActivityNet items). ``capitalize`` also
  lower-cases the rest of ``ctx_b``, which cannot be redone; ``ctx_b`` is
  lower case in nearly every item, so the prompts agree but for rare items.
* BoolQ (llm-foundry ``query`` = ``"Passage: {passage}\\nQuestion:
  {question}?"``): split at the last ``"\\nQuestion: "`` and rebuilt as
  lm-eval's ``"{passage}\\nQuestion: {question}?\\nAnswer:"``.
* OpenBookQA (llm-foundry ``query`` = the question stem): used as is, which
  is lm-eval's ``doc_to_text: question_stem``.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..corpus import read_jsonl

__all__ = [
    "LM_EVAL_METRICS",
    "TASK_FILES",
    "ZEROSHOT_TASKS",
    "MultipleChoiceItem",
    "hellaswag_preprocess",
    "load_arc",
    "load_boolq",
    "load_hellaswag",
    "load_medqa",
    "load_mmlu_csv",
    "load_openbookqa",
    "load_piqa",
    "load_task",
    "load_winogrande",
]

#: The seven zero-shot tasks of the pruning literature, in the usual order.
ZEROSHOT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                  "openbookqa")

#: File of each task under a data root.
TASK_FILES = {
    "piqa": "piqa/valid.jsonl",
    "arc_easy": "arc/ARC-Easy-Test.jsonl",
    "arc_challenge": "arc/ARC-Challenge-Test.jsonl",
    "hellaswag": "hellaswag/hellaswag_val_full.txt",
    "winogrande": "winogrande/dev.jsonl",
    "boolq": "boolq/boolq_dev_llmfoundry.jsonl",
    "openbookqa": "openbookqa/openbookqa_test_llmfoundry.jsonl",
}

#: Metrics that lm-evaluation-harness reports for each task.
LM_EVAL_METRICS = {
    "piqa": ("acc", "acc_norm"), "arc_easy": ("acc", "acc_norm"),
    "arc_challenge": ("acc", "acc_norm"), "hellaswag": ("acc", "acc_norm"),
    "winogrande": ("acc",), "boolq": ("acc",), "openbookqa": ("acc", "acc_norm"),
}


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One multiple-choice question as log-likelihood requests.

    Attributes
    ----------
    contexts : tuple of str
        The context of each choice (the same prompt for every choice, except
        in WinoGrande's partial scoring).
    continuations : tuple of str
        The scored text of each choice, starting with the target delimiter.
    choices : tuple of str
        lm-eval's ``doc_to_choice`` strings; their lengths in characters
        normalise the log-likelihoods for ``acc_norm``.
    gold : int
        Index of the right choice.
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    choices: tuple[str, ...]
    gold: int

    def __post_init__(self):
        n = len(self.choices)
        if n < 2 or len(self.contexts) != n or len(self.continuations) != n:
            raise ValueError("An item needs at least two choices and one context and one "
                             "continuation per choice.")
        if not 0 <= self.gold < n:
            raise ValueError(f"gold index {self.gold} is out of range for {n} choices.")

    @classmethod
    def from_prompt(cls, prompt: str, choices, gold: int, delimiter: str = " "):
        """Item whose choices all follow one prompt (lm-eval's usual case)."""
        choices = tuple(choices)
        return cls(contexts=(prompt,) * len(choices),
                   continuations=tuple(delimiter + c for c in choices),
                   choices=choices, gold=int(gold))


def _path(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No task file at {path}.")
    return path


def _jsonl(path: Path, limit: int | None) -> list[dict]:
    return [record for _, record in read_jsonl(path, limit=limit)]


def _labels(path: Path, limit: int | None) -> list[int]:
    labels = [int(line) for line in path.read_text().split()]
    return labels if limit is None else labels[:limit]


def load_piqa(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """PIQA validation: ``"Question: {goal}\\nAnswer:"`` → sol1 / sol2.

    ``path`` is ``valid.jsonl``; the labels are read from
    ``valid-labels.lst`` beside it.
    """
    path = _path(path)
    labels = _labels(_path(path.with_name(path.stem + "-labels.lst")), limit)
    docs = _jsonl(path, limit)
    if len(labels) != len(docs):
        raise ValueError(f"{path} has {len(docs)} items but its labels file {len(labels)}.")
    return [MultipleChoiceItem.from_prompt(f"Question: {d['goal']}\nAnswer:",
                                           [d["sol1"], d["sol2"]], label)
            for d, label in zip(docs, labels)]


def load_arc(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """ARC (Easy or Challenge) release JSONL: ``"Question: {stem}\\nAnswer:"``."""
    items = []
    for d in _jsonl(_path(path), limit):
        labels = [c["label"] for c in d["question"]["choices"]]
        items.append(MultipleChoiceItem.from_prompt(
            f"Question: {d['question']['stem']}\nAnswer:",
            [c["text"] for c in d["question"]["choices"]], labels.index(d["answerKey"])))
    return items


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess`` (drops WikiHow bracket markup)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


_SENTENCE_END = re.compile(r"[.!?] ")


def _capitalize_last_sentence(query: str) -> str:
    """Upper-case the first letter of the context's last sentence, which
    lm-eval gets from ``ctx_b.capitalize()``."""
    label, sep, ctx = query.partition(": ")
    ends = [m.end() for m in _SENTENCE_END.finditer(ctx)]
    if not sep or not ends or ends[-1] >= len(ctx) or not ctx[ends[-1]].islower():
        return query
    i = ends[-1]
    return label + sep + ctx[:i] + ctx[i].upper() + ctx[i + 1:]


def load_hellaswag(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """HellaSwag validation in llama.cpp's text format (6 lines per item:
    ``activity_label: ctx``, gold label, four endings)."""
    path = _path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{path} has {len(lines)} lines, not a multiple of 6; expected "
                         "llama.cpp's HellaSwag format (context, label, four endings).")
    n = len(lines) // 6 if limit is None else min(limit, len(lines) // 6)
    items = []
    for k in range(n):
        block = lines[6 * k:6 * k + 6]
        query = hellaswag_preprocess(_capitalize_last_sentence(block[0]))
        items.append(MultipleChoiceItem.from_prompt(
            query, [hellaswag_preprocess(e) for e in block[2:6]], int(block[1])))
    return items


def load_winogrande(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """WinoGrande with lm-eval's partial scoring: the contexts are the
    sentence up to the blank with each option filled in, the continuation is
    the rest of the sentence after the blank."""
    items = []
    for d in _jsonl(_path(path), limit):
        sentence = d["sentence"]
        blank = sentence.index("_")
        target = sentence[blank + 1:].strip()
        contexts = tuple(sentence[:blank] + option for option in (d["option1"], d["option2"]))
        items.append(MultipleChoiceItem(contexts=contexts, continuations=(" " + target,) * 2,
                                        choices=contexts, gold={"1": 0, "2": 1}[d["answer"]]))
    return items


def load_boolq(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """BoolQ validation from llm-foundry's JSONL, rebuilt into lm-eval's
    ``"{passage}\\nQuestion: {question}?\\nAnswer:"`` → " no" / " yes"."""
    items = []
    for d in _jsonl(_path(path), limit):
        query = d["query"]
        if not query.startswith("Passage: ") or "\nQuestion: " not in query:
            raise ValueError("A BoolQ record's query must read 'Passage: ...\\nQuestion: ...?' "
                             f"(llm-foundry format); got {query[:80]!r}.")
        passage, _, question = query[len("Passage: "):].rpartition("\nQuestion: ")
        question = question[:-1] if question.endswith("?") else question
        items.append(MultipleChoiceItem.from_prompt(
            f"{passage}\nQuestion: {question}?\nAnswer:", ["no", "yes"], d["gold"]))
    return items


def load_openbookqa(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """OpenBookQA test from llm-foundry's JSONL: prompt = question stem."""
    return [MultipleChoiceItem.from_prompt(d["query"], d["choices"], d["gold"])
            for d in _jsonl(_path(path), limit)]


def _mmlu_prompt(question: str, options, description: str = "") -> str:
    letters = "ABCD"
    body = "\n".join(f"{letters[i]}. {option}" for i, option in enumerate(options))
    return f"{description}{question.strip()}\n{body}\nAnswer:"


def load_mmlu_csv(path, limit: int | None = None, subject: str | None = None,
                  ) -> list[MultipleChoiceItem]:
    """An MMLU subject CSV (question, A, B, C, D, answer letter; no header),
    zero-shot as lm-eval's ``mmlu_<subject>`` task: the description
    ``"The following are multiple choice questions (with answers) about
    {subject}.\\n\\n"``, then ``"{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"``,
    continuations ``" A"`` .. ``" D"``.

    Parameters
    ----------
    subject : str, optional
        Defaults to the file name without ``_test`` / ``_dev``, underscores
        as spaces (``professional_law_test.csv`` → ``professional law``).
    """
    path = _path(path)
    if subject is None:
        subject = re.sub(r"_(test|dev|val)$", "", path.stem).replace("_", " ")
    description = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    items = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if len(row) != 6 or row[5] not in ("A", "B", "C", "D"):
                raise ValueError(f"{path} row {n} is not 'question,A,B,C,D,answer letter'.")
            items.append(MultipleChoiceItem.from_prompt(
                _mmlu_prompt(row[0], row[1:5], description), list("ABCD"), "ABCD".index(row[5])))
            if limit is not None and len(items) >= limit:
                break
    return items


def load_medqa(path, limit: int | None = None) -> list[MultipleChoiceItem]:
    """MedQA / MedMCQA JSONL (``question``, ``options`` {A..D},
    ``answer_idx``) in the MMLU zero-shot format without a description:
    ``"{question}\\nA. ..\\nD. ..\\nAnswer:"`` → ``" A"`` .. ``" D"``."""
    items = []
    for d in _jsonl(_path(path), limit):
        letters = sorted(d["options"])
        if letters != ["A", "B", "C", "D"]:
            raise ValueError(f"{path}: options must be A-D, got {letters}.")
        items.append(MultipleChoiceItem.from_prompt(
            _mmlu_prompt(d["question"], [d["options"][k] for k in letters]), letters,
            letters.index(d["answer_idx"])))
    return items


_LOADERS = {
    "piqa": load_piqa, "arc_easy": load_arc, "arc_challenge": load_arc,
    "hellaswag": load_hellaswag, "winogrande": load_winogrande, "boolq": load_boolq,
    "openbookqa": load_openbookqa,
}


def load_task(name: str, root: str | os.PathLike, limit: int | None = None,
              ) -> list[MultipleChoiceItem]:
    """Items of zero-shot task ``name`` from the data root ``root``.

    Parameters
    ----------
    name : str
        One of :data:`ZEROSHOT_TASKS`.
    root : str or path-like
        Folder with the layout of :data:`TASK_FILES`.
    limit : int, optional
        Keep the first ``limit`` items (deterministic quick runs).
    """
    if name not in _LOADERS:
        raise ValueError(f"Unknown task {name!r}; choose from {', '.join(ZEROSHOT_TASKS)}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}.")
    return _LOADERS[name](Path(root) / TASK_FILES[name], limit)

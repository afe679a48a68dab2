"""Evaluation of a model: perplexity, zero-shot accuracy, domain scores and
efficiency."""

from .domain import domain_accuracy, domain_perplexity, load_multiple_choice
from .efficiency import count_parameters, measure_efficiency
from .evaluate import evaluate_model
from .loglikelihood import encode_pair, loglikelihoods, model_max_length
from .perplexity import (
                         PROTOCOLS,
                         load_text,
                         load_wikitext2,
                         needs_bos,
                         perplexity,
                         perplexity_protocol,
                         wikitext_rows,
)
from .tasks import (
                         LM_EVAL_METRICS,
                         TASK_FILES,
                         ZEROSHOT_TASKS,
                         MultipleChoiceItem,
                         hellaswag_preprocess,
                         load_arc,
                         load_boolq,
                         load_hellaswag,
                         load_medqa,
                         load_mmlu_csv,
                         load_openbookqa,
                         load_piqa,
                         load_task,
                         load_winogrande,
)
from .zeroshot import evaluate_zeroshot, score_items, summarize_zeroshot

__all__ = [
    "LM_EVAL_METRICS",
    "TASK_FILES",
    "ZEROSHOT_TASKS",
    "MultipleChoiceItem",
    "PROTOCOLS",
    "count_parameters",
    "domain_accuracy",
    "domain_perplexity",
    "encode_pair",
    "evaluate_model",
    "evaluate_zeroshot",
    "hellaswag_preprocess",
    "load_arc",
    "load_boolq",
    "load_hellaswag",
    "load_medqa",
    "load_mmlu_csv",
    "load_multiple_choice",
    "load_openbookqa",
    "load_piqa",
    "load_task",
    "load_text",
    "load_wikitext2",
    "load_winogrande",
    "loglikelihoods",
    "measure_efficiency",
    "model_max_length",
    "needs_bos",
    "perplexity",
    "perplexity_protocol",
    "score_items",
    "summarize_zeroshot",
    "wikitext_rows",
]

"""Reports a scientist can publish from: key result, methods, figures and tables.

:func:`build_report` assembles the report of a whole run from its results
table (:mod:`llmbrain.evaluation.results`), its networks and its plans;
:class:`Report` builds a page piece by piece. A saved report is a folder
holding one self-contained ``index.html`` (figures embedded, no JavaScript,
no network), the figures as PNG files with descriptive names, and a linked
list of every file in the folder. :func:`interpret` states the key result
plainly, and says so when it contradicts an expectation such as
:data:`PUBLISHED_CLAIMS`.
"""

from ._build import build_report
from ._document import Report
from ._format import format_number, format_table
from ._interpret import PUBLISHED_CLAIMS, Finding, KeyResult, interpret
from ._methods import Methods, package_versions
from ._stats import compare_to_controls, speedups

__all__ = [
    "PUBLISHED_CLAIMS",
    "Finding",
    "KeyResult",
    "Methods",
    "Report",
    "build_report",
    "compare_to_controls",
    "format_number",
    "format_table",
    "interpret",
    "package_versions",
    "speedups",
]

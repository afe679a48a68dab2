"""Corpora and evaluation sets: a catalogue, one data directory, and fetchers.

llmbrain never needs a data set to run, but evaluating and calibrating do.
The catalogue (:func:`list_datasets`, also in the repository's
``data/README.md``) names every corpus and evaluation set the toolbox reads,
with its public source at a fixed commit, licence and SHA-256. The fetchers
find the files under the data directories (:func:`get_data_dirs`: the
``data_dir`` argument, ``$LLMBRAIN_DATA``, ``$LLMBRAIN_SHARED_DATA``, then
``~/llmbrain_data``), check them, and download what is missing when online,
as ``nilearn.datasets`` does. Offline with nothing local, they raise
:class:`DatasetNotFoundError` saying which files to put where.

>>> from llmbrain.datasets import fetch_wikitext2, fetch_zeroshot_tasks  # doctest: +SKIP
>>> wikitext = fetch_wikitext2()                                          # doctest: +SKIP
>>> tasks = fetch_zeroshot_tasks(["piqa", "arc_easy"])                    # doctest: +SKIP
"""

from ._fetch import (DatasetNotFoundError, catalogue_markdown, fetch_c4, fetch_dataset,
                     fetch_wikitext2, fetch_zeroshot_tasks, get_data_dirs, list_datasets)

__all__ = [
    "DatasetNotFoundError",
    "catalogue_markdown",
    "fetch_c4",
    "fetch_dataset",
    "fetch_wikitext2",
    "fetch_zeroshot_tasks",
    "get_data_dirs",
    "list_datasets",
]

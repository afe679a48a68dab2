"""``python -m llmbrain.datasets``: print the catalogue, or check a data directory."""

import argparse
import sys

from ._fetch import DatasetNotFoundError, catalogue_markdown, fetch_dataset, list_datasets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmbrain.datasets",
        description="Print the catalogue of data sets (Markdown), or check which of them a data "
                    "directory holds.")
    parser.add_argument("--check", metavar="DATA_DIR", default=None,
                        help="report, for every data set, whether DATA_DIR (or the default data "
                             "directories) holds it with the right checksums; downloads nothing")
    args = parser.parse_args(argv)
    if args.check is None:
        sys.stdout.write(catalogue_markdown())
        return 0
    status = 0
    for name in list_datasets().index:
        try:
            bunch = fetch_dataset(name, args.check, download=False, verbose=0)
            print(f"ok       {name:22s} {bunch.root}")
        except (DatasetNotFoundError, ValueError) as err:
            print(f"missing  {name:22s} {str(err).splitlines()[0]}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

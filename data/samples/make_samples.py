"""Write the small samples kept in this folder from a full data directory.

Each sample is the first items of one file of the catalogue, cut at item boundaries and
otherwise byte-identical, in the same layout as a data directory, so that any function that
takes a data root (``llmbrain.evaluation.evaluate_zeroshot``, ``load_task``) reads this folder
as it reads the full data::

    python data/samples/make_samples.py /path/to/llmbrain_data
"""

import argparse
import hashlib
from pathlib import Path

N_ITEMS = 8
#: sample path -> (lines per item, items); the first lines of the full file of the same path.
SAMPLES = {
    "piqa/valid.jsonl": (1, N_ITEMS),
    "piqa/valid-labels.lst": (1, N_ITEMS),
    "arc/ARC-Easy-Test.jsonl": (1, N_ITEMS),
    "arc/ARC-Challenge-Test.jsonl": (1, N_ITEMS),
    "hellaswag/hellaswag_val_full.txt": (6, N_ITEMS),
    "winogrande/dev.jsonl": (1, N_ITEMS),
    "winogrande/dev-labels.lst": (1, N_ITEMS),
    "boolq/boolq_dev_llmfoundry.jsonl": (1, N_ITEMS),
    "openbookqa/openbookqa_test_llmfoundry.jsonl": (1, N_ITEMS),
    "wikitext2_raw/test.hf_rows_newline_joined.txt": (1, 40),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="a full data directory")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    sums = []
    for path, (lines_per_item, items) in SAMPLES.items():
        with open(args.data_dir / path, "rb") as f:
            lines = [f.readline() for _ in range(lines_per_item * items)]
        data = b"".join(lines)
        (here / path).parent.mkdir(parents=True, exist_ok=True)
        (here / path).write_bytes(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {path}\n")
    (here / "SHA256SUMS").write_text("".join(sums))


if __name__ == "__main__":
    main()

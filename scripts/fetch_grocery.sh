#!/usr/bin/env bash
# Fetches GroceryStoreDataset (MIT) for `make models` into data/GroceryStoreDataset, once.
# Needs access to github.com; nothing in the pipeline downloads data at run time.
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/data/GroceryStoreDataset}"
if [ -f "$dest/dataset/classes.csv" ]; then echo "$dest"; exit 0; fi
mkdir -p "$(dirname "$dest")"
git clone --depth 1 https://github.com/marcusklasson/GroceryStoreDataset "$dest" >&2
echo "$dest"

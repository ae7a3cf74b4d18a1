"""Names of files that one stage writes and another reads, so both sides spell them the same way."""

# A training run's record of its held-out split (written by training, read by evaluation's --heldout).
SPLIT_FILE = "data_split.json"

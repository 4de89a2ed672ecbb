"""`tunelab label`: pick what is worth labelling, find likely label errors, move batches to and
from annotators (Label Studio, CSV, JSONL), and turn served feedback into training records."""

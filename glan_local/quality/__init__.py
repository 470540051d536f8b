"""Dataset quality and publishing: dedup, decontamination, the judge's threshold, export with a
dataset card, and an HTML report. Runs at the end of a generation (run.py) or on any GLAN-style
JSONL/parquet through `glan-local-quality` (cli.py); pipeline.run_quality ties the steps."""

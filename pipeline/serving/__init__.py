"""Models leaving the pipeline: the served model (its MLflow directory and what it does with a request) and
`tools.predict`'s files."""

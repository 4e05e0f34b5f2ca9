"""The DVC stages: each parses its options and params, calls pipeline/, and writes what dvc.yaml declares."""

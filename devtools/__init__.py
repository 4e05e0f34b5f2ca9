"""Development tooling kept apart from the DVC stages: the demo, the bench, the generated VOC archive."""

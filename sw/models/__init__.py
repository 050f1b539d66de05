"""Real models for the NPU: training and export scripts (need the ``train`` extra)."""

"""The NPU's hardware, in Amaranth 0.5."""

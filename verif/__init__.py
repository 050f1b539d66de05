"""Verification: cocotb testbenches, NumPy golden models and shared test helpers."""

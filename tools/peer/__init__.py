"""PyTorch peers of kdpose's networks: references for the equality fixtures and benchmarks.

These modules import torch, a tool-only dependency: nothing in ``kdpose`` or ``tests`` imports them.
"""

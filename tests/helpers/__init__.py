"""Helpers for the tests and benchmarks, kept out of the product packages.

``synthetic_serving`` and ``synthetic_feast`` publish small versions with the real layout;
``services`` starts throwaway ``redis-server`` processes (and kills them); ``faults`` injects
crashes; ``wait`` waits on a condition instead of sleeping.
"""

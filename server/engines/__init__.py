"""Inference engines behind one contract (``base.Engine``)."""

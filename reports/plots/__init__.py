"""Matplotlib figures of the report (Agg canvas, no pyplot state), each returned as an embeddable PNG."""

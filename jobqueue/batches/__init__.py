"""Batches: reading batch files (files), turning rows into jobs (specs), and exporting a
batch's results (export)."""

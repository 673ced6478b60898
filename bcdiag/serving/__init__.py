"""Serving: each modality's champion scores scans, with heatmaps, one by one or in batches."""

"""Datasets: streaming exports, imports of native and public formats, agreement, frozen snapshots."""

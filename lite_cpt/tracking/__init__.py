"""Experiment tracking (TensorBoard, W&B, MLflow) that follows each unit's metrics.jsonl; see
docs/tracking.md."""

"""Model monitoring: feature drift between the training window and recent sessions."""

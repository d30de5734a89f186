"""Statistical and machine-learning models fitted on the feature tables."""

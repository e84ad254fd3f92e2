"""Fraud scoring data: a seeded transaction simulator and the feature spec / table loader."""

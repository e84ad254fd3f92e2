"""Sentiment analysis on Rotten Tomatoes review snippets: a recurrent and a Transformer model."""

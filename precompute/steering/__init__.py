"""Steering: fix a concept's expert units during generation and label what the model writes."""

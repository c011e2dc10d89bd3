"""Kafka-free runtime: encoder, vector store, profile maths, retrieval, ranking, explanations."""

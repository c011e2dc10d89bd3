"""Offline side: dataset loaders, evaluation, fine-tuning and export of the encoder."""

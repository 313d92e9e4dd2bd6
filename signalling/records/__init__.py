"""The call record: transcripts, recordings and traces (see service.py)."""

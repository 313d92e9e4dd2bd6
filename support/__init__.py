"""Test and benchmark support shared by `tests/` and `bench/` (never imported by the server):
synthesised speech, headless Chromium, vision frames, the safety and knowledge sets."""

"""Speech pipeline: VAD -> streaming ASR -> LLM -> TTS, with turn-taking.

Nothing in this package knows about WebRTC: audio comes in as 16 kHz mono int16 frames and
leaves as int16 chunks at the synthesizer's own sample rate.
"""

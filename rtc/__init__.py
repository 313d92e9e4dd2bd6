"""WebRTC media: peer connections, ICE address policy, audio tracks, resampling, pacing.

Nothing in this package loads a model or knows about the speech pipeline.
"""

from .base import SpeechSynthesizer, SynthesizedAudio

__all__ = ["SpeechSynthesizer", "SynthesizedAudio"]

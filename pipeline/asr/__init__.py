from .base import SpeechRecognizer, Transcript

__all__ = ["SpeechRecognizer", "Transcript"]

from .base import ChatMessage, LanguageModel, LLMError

__all__ = ["ChatMessage", "LLMError", "LanguageModel"]

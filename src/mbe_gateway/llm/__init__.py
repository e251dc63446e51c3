"""LLM providers and the failover chain that the pipeline asks for answers."""

from mbe_gateway.llm.base import ApiKey, ChatMessage, Completion, Provider
from mbe_gateway.llm.chain import Chain, ProviderStatus
from mbe_gateway.llm.factory import build_chain, build_provider
from mbe_gateway.llm.scripted import Interrupted, ScriptedProvider

__all__ = [
    "ApiKey",
    "Chain",
    "ChatMessage",
    "Completion",
    "Interrupted",
    "Provider",
    "ProviderStatus",
    "ScriptedProvider",
    "build_chain",
    "build_provider",
]

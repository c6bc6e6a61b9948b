"""Shared counters: in process memory (one process) or Redis (shared by every replica)."""

from api.state.counters import CounterStore, MemoryCounterStore, RedisCounterStore, WindowCount

__all__ = ["CounterStore", "MemoryCounterStore", "RedisCounterStore", "WindowCount"]

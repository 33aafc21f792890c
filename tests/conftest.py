from live import live_node

__all__ = ["live_node"]

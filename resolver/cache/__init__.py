from resolver.cache.cache import Loader, Resolution, ResolutionCache, record_ttl
from resolver.cache.entry import CacheEntry

__all__ = ["CacheEntry", "Loader", "Resolution", "ResolutionCache", "record_ttl"]

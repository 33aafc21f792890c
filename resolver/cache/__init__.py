from resolver.cache.cache import Loader, Resolution, ResolutionCache
from resolver.cache.entry import CacheEntry

__all__ = ["CacheEntry", "Loader", "Resolution", "ResolutionCache"]
